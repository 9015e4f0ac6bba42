"""``?commit=multi``: Redis commits as ``WATCH``/``MULTI``/``EXEC``, for servers without scripting.

The default commit (ADR 0008) is one check-and-set Lua script. Servers that
forbid scripting (an ACL without ``@scripting``, some managed or
Redis-compatible servers) answer it ``NOPERM`` or "unknown command"; this
module commits without it (ADR 0011), on the same key layout (ADR 0003), so a
store written in one mode is read and written by the other:

- A transaction that reads takes a dedicated connection from the storage's
  bounded pool at its first read and sends ``WATCH version`` with the read
  there; later reads use the same connection (``WATCH`` belongs to a
  connection, so it cannot share the multiplexed one).
- ``commit()`` sends ``MULTI``, ``HSET``/``ZADD`` of the puts, ``HDEL``/``ZREM``
  of the deletes, ``INCR version``, ``EXEC`` in one write on that connection.
  Every commit ``INCR``s the version, so a nil ``EXEC`` reply means a commit
  landed after the first read: ``TransactionConflictError``, nothing written.
- A write-only transaction watches nothing and never conflicts: its block
  goes through the storage's shared (group-commit) connection.
- A read-only transaction validates with an empty ``MULTI``/``EXEC`` under its
  ``WATCH``: nil means the actor changed since its first read.
- Abort (and any end without ``EXEC``) sends ``UNWATCH`` before the connection
  goes back to the pool; a connection that broke is dropped instead.

Honest outcomes: a connection found broken before the block was handed to
the socket (the ``WATCH`` went with it) is ``StorageUnavailableError``, nothing
written; a failure once it was handed over is ``CommitOutcomeUnknownError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import redis.exceptions as rex
from redis.asyncio.connection import AbstractConnection, ConnectionPool

from kelpie.errors import CorruptStateError, StorageUnavailableError, TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage.base import Writes
from kelpie.storage.redis.keys import ActorKeys, RedisReads
from kelpie.storage.redis.pipeline import (
    Command,
    Request,
    checkout,
    pack,
    refresh,
    roundtrip,
    socket_looks_stale,
)

if TYPE_CHECKING:
    from kelpie.storage.redis.storage import RedisStorage

__all__ = [
    "COMMIT_MODES",
    "Dedicated",
    "MultiTransaction",
    "commit_expecting",
    "fall_back_to_multi",
    "multi_block",
    "refuses_scripting",
    "watched",
]

COMMIT_MODES = ("script", "multi")
"""Values of the ``commit`` option: ``script`` (default; falls back to ``multi``) or ``multi``."""

_log = logging.getLogger("kelpie.storage.redis")

_UNWATCH = pack([(b"UNWATCH",)])
_EMPTY_BLOCK = pack([(b"MULTI",), (b"EXEC",)])


def refuses_scripting(reply: object) -> bool:
    """True if ``reply`` (to ``EVALSHA``/``EVAL``) says the server will not run scripts.

    Either way nothing ran: the command was refused before it started.
    """
    if isinstance(reply, rex.NoPermissionError):
        return True
    return isinstance(reply, rex.ResponseError) and "unknown command" in str(reply).lower()


def fall_back_to_multi(storage: RedisStorage, reply: BaseException) -> None:
    """Switch ``storage`` to ``WATCH``/``MULTI``/``EXEC`` commits for good; log it once."""
    if storage.commit_mode == "multi":
        return
    storage.commit_mode = "multi"
    _log.warning(
        "redis at %s refuses kelpie's commit script (%s); committing with "
        "WATCH/MULTI/EXEC from now on (add ?commit=multi to the URL to skip the attempt)",
        storage.where,
        reply,
    )


def multi_block(keys: ActorKeys, writes: Writes, empties: bool = False) -> tuple[bytes, int]:
    """The packed ``MULTI`` … ``EXEC`` block applying ``writes``, and its number of replies.

    The replies are ``OK`` (``MULTI``), one ``QUEUED`` per command, then ``EXEC``'s.
    A commit with puts (re)adds the actor's member to the actor index (a no-op
    when it is there); ``empties`` (the commit deletes the actor's last keys,
    found under ``WATCH`` by ``_empties``) removes it. ``COPY deletes version``
    starts a new version key from the delete counter, as the script does (ADR 0014).
    """
    puts: list[bytes] = []
    scored: list[bytes] = []
    deleted: list[bytes] = []
    for key, value in writes.items():
        if value is None:
            deleted.append(key)
        else:
            puts += (key, value)
            scored += (b"0", key)
    commands: list[Command] = [(b"MULTI",)]
    if puts:
        commands.append((b"HSET", keys.data, *puts))
        commands.append((b"ZADD", keys.index, *scored))
        commands.append((b"ZADD", keys.actors, b"0", keys.member))
    if deleted:
        commands.append((b"HDEL", keys.data, *deleted))
        commands.append((b"ZREM", keys.index, *deleted))
    if empties and not puts:
        commands.append((b"ZREM", keys.actors, keys.member))
    commands.append((b"COPY", keys.deletes, keys.version))
    commands.append((b"INCR", keys.version))
    commands.append((b"EXEC",))
    return pack(commands), len(commands)


def judge_block(storage: RedisStorage, actor: object, replies: list[Any]) -> None:
    """Raise unless ``replies`` (to ``multi_block`` or ``_EMPTY_BLOCK``) say the block ran."""
    *queued, result = replies
    for reply in queued:
        if isinstance(reply, rex.ResponseError):
            # Refused while queueing (OOM, NOPERM, ...): EXEC then discards the whole block.
            raise storage._translate(reply, "committing") from reply
    if result is None:
        raise TransactionConflictError(
            f"another commit on {actor} landed after this transaction read it"
        )
    if isinstance(result, rex.ResponseError):  # EXECABORT and the like: nothing ran
        raise storage._translate(result, "committing") from result
    if not isinstance(result, list):
        raise CorruptStateError(
            f"redis at {storage.where} answered {result!r} to EXEC of a commit on {actor}"
        )
    for reply in result:
        if isinstance(reply, rex.ResponseError):
            raise CorruptStateError(
                f"a command of the commit on {actor} failed inside EXEC at {storage.where} "
                f"({reply}); Redis does not roll back, so the rest of the commit was applied. "
                f"A key under kelpie's prefix has the wrong type: something other than kelpie "
                f"wrote it"
            ) from reply


class Dedicated:
    """Connections for transactions that read, taken from the storage's bounded pool.

    Idle ones (at most ``keep``: half the pool, up to 64) stay here between
    transactions, ready for the next: redis-py's pool checkout and release
    were a third of a small transaction's client time. Each is checked for a
    server-side close before it is handed out. Together with the rest they
    never exceed the pool's ``max_connections``.
    """

    def __init__(self, pool: ConnectionPool, keep: int = 8) -> None:
        self._pool = pool
        self._keep = keep
        self._idle: list[AbstractConnection] = []
        self._closed = False

    async def take(self) -> AbstractConnection:
        """A connected, clean connection; raw redis errors propagate."""
        while self._idle:
            conn = self._idle.pop()
            try:
                await refresh(conn)
            except BaseException:
                await self._pool.release(conn)
                raise
            return conn
        return await checkout(self._pool)

    async def give_back(self, conn: AbstractConnection, watching: bool) -> None:
        """Keep or return ``conn`` with no ``WATCH`` left on it (``UNWATCH``, or dropped)."""
        try:
            if watching and conn.is_connected:
                # On failure roundtrip dropped the connection, and its WATCH with it.
                with contextlib.suppress(Exception):
                    await roundtrip(conn, _UNWATCH, 1)
        except BaseException:
            await self._pool.release(conn)
            raise
        if conn.is_connected and not self._closed and len(self._idle) < self._keep:
            self._idle.append(conn)
        else:
            await self._pool.release(conn)

    async def close(self) -> None:
        """Give every idle connection back to the pool, disconnected; keep none from now on."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            try:
                await conn.disconnect(nowait=True)
            finally:
                await self._pool.release(conn)


def dedicated(storage: RedisStorage) -> Dedicated:
    """The storage's ``Dedicated`` connections (made on first use)."""
    found = storage._dedicated
    if found is None:
        keep = min(64, getattr(storage._pool, "max_connections", 2) // 2)
        found = storage._dedicated = Dedicated(storage._pool, keep)
    return found


async def _checkout(storage: RedisStorage, action: str) -> AbstractConnection:
    try:
        return await dedicated(storage).take()
    except Exception as exc:
        raise storage._translate(exc, action) from exc


def _only_deletes(writes: Writes) -> list[bytes] | None:
    """The deleted keys if ``writes`` puts nothing (the commit may empty the actor)."""
    deleted = [key for key, value in writes.items() if value is None]
    return deleted if len(deleted) == len(writes) else None


async def _empties(
    storage: RedisStorage, conn: AbstractConnection, keys: ActorKeys, deleted: list[bytes]
) -> bool:
    """True if deleting ``deleted`` leaves the actor without keys (asked on ``conn``,
    whose ``WATCH version`` makes the answer hold at ``EXEC``, or ``EXEC`` fails)."""
    try:
        count, values = await roundtrip(
            conn, pack([(b"HLEN", keys.data), (b"HMGET", keys.data, *deleted)]), 2
        )
    except Exception as exc:
        raise storage._translate(exc, "committing") from exc
    for reply in (count, values):
        if isinstance(reply, rex.ResponseError):
            raise storage._translate(reply, "committing") from reply
    return int(count) == sum(value is not None for value in values)


_WATCHED_ATTEMPTS = 100


async def watched(
    storage: RedisStorage,
    actor: object,
    watch: Command,
    attempt: Callable[[AbstractConnection], Awaitable[tuple[bytes, int] | None]],
    action: str,
) -> list[Any] | None:
    """Run ``attempt`` under ``WATCH`` until its block executes: the block's replies.

    ``attempt(conn)`` reads what it needs on ``conn`` and returns the packed
    block and its reply count, or ``None`` when there is nothing to do. A
    block that found the watched keys changed is built and sent again (for
    writes that must not conflict: write-only deletes, ``delete_actor``).
    """
    conn = await _checkout(storage, action)
    watching = False
    try:
        for _ in range(_WATCHED_ATTEMPTS):
            try:
                await roundtrip(conn, pack([watch]), 1)
            except Exception as exc:
                raise storage._translate(exc, action) from exc
            watching = True
            block = await attempt(conn)
            if block is None:
                return None
            packed, count = block
            watching = False  # EXEC ends the WATCH; a failed round trip drops the connection
            try:
                replies = await roundtrip(conn, packed, count)
            except Exception as exc:
                raise storage._translate(exc, action, sent=True) from exc
            if replies[-1] is not None:
                return replies
        raise StorageUnavailableError(
            f"{action} on {actor} at {storage.where} kept meeting concurrent writes "
            f"({_WATCHED_ATTEMPTS} attempts); nothing was written: retry later"
        )
    finally:
        await dedicated(storage).give_back(conn, watching)


async def _send_block(
    storage: RedisStorage, actor: ActorId, keys: ActorKeys, writes: Writes
) -> None:
    """A write-only commit: no ``WATCH``, never conflicts, through the shared connection.

    One that only deletes may empty the actor: it is decided under ``WATCH``
    on a dedicated connection, and sent again if the actor moved meanwhile.
    """
    deleted = _only_deletes(writes)
    if deleted is not None:

        async def attempt(conn: AbstractConnection) -> tuple[bytes, int]:
            return multi_block(keys, writes, await _empties(storage, conn, keys, deleted))

        replies = await watched(storage, actor, (b"WATCH", keys.version), attempt, "committing")
        assert replies is not None
        judge_block(storage, actor, replies)
        return
    packed, count = multi_block(keys, writes)
    replies = await storage._send(actor, Request(packed, count, True, "committing"))
    judge_block(storage, actor, replies[:count])


async def commit_expecting(
    storage: RedisStorage, actor: ActorId, keys: ActorKeys, expected: bytes, writes: Writes
) -> None:
    """Commit ``writes`` if the actor's version is still ``expected`` (``b""``: write-only).

    For a transaction begun in script mode whose commit found scripting
    refused: ``WATCH version`` and ``GET version`` on a pooled connection,
    then the block under that ``WATCH`` (two round trips).
    """
    if not expected:
        await _send_block(storage, actor, keys, writes)
        return
    conn = await _checkout(storage, "committing")
    watching = True
    try:
        try:
            _, version = await roundtrip(
                conn, pack([(b"WATCH", keys.version), (b"GET", keys.version)]), 2
            )
        except Exception as exc:
            raise storage._translate(exc, "committing") from exc
        token = version if version is not None else None
        if token is None:
            try:
                (floor,) = await roundtrip(conn, pack([(b"GET", keys.deletes)]), 1)
            except Exception as exc:
                raise storage._translate(exc, "committing") from exc
            token = b"@" + (floor or b"0")
        if token != expected:
            raise TransactionConflictError(
                f"another commit on {actor} landed after this transaction read it"
            )
        deleted = _only_deletes(writes)
        empties = deleted is not None and await _empties(storage, conn, keys, deleted)
        packed, count = multi_block(keys, writes, empties)
        watching = False  # EXEC ends the WATCH; a failed round trip drops the connection
        try:
            replies = await roundtrip(conn, packed, count)
        except Exception as exc:
            raise storage._translate(exc, "committing", sent=True) from exc
        judge_block(storage, actor, replies)
    finally:
        await dedicated(storage).give_back(conn, watching)


class MultiTransaction(RedisReads):
    """A transaction of a storage in ``multi`` commit mode (see the module docstring)."""

    _storage: RedisStorage

    def __init__(self, storage: RedisStorage, actor: ActorId) -> None:
        super().__init__(storage, actor)
        self._keys = storage._actor_keys(actor)
        self._conn: AbstractConnection | None = None  # dedicated from the first read on
        self._watching = False  # a WATCH may be set on _conn
        self._failed = False  # a read failed: what this transaction saw cannot be trusted
        self._lock = asyncio.Lock()  # one command at a time on the dedicated connection

    async def _read_command(self, command: Command, action: str) -> Any:
        storage = self._storage
        try:
            async with self._lock:
                conn = self._conn
                if conn is None:
                    conn = self._conn = await _checkout(storage, action)
                    packed, count = pack([(b"WATCH", self._keys.version), command]), 2
                    self._watching = True
                elif not conn.is_connected:
                    raise StorageUnavailableError(
                        f"the connection holding this transaction's WATCH on {self.actor} "
                        f"was lost; nothing was written: retry the transaction"
                    )
                else:
                    packed, count = pack([command]), 1
                try:
                    replies = await roundtrip(conn, packed, count)
                except Exception as exc:
                    raise storage._translate(exc, action) from exc
            for reply in replies:
                if isinstance(reply, rex.ResponseError):
                    raise storage._translate(reply, action) from reply
        except BaseException:
            self._failed = True
            raise
        return replies[-1]

    def _refuse_if_failed(self, doing: str) -> None:
        if self._failed:
            raise StorageUnavailableError(
                f"a read of this transaction on {self.actor} failed; {doing}: retry the transaction"
            )

    async def _under_watch(
        self, conn: AbstractConnection, packed: bytes, count: int, *, commit: bool
    ) -> list[Any]:
        """Send a block on the watched connection; its replies or a kelpie error."""
        storage = self._storage
        action = "committing" if commit else "validating reads"
        async with self._lock:
            if not conn.is_connected or socket_looks_stale(conn):
                # The server (or the network) closed it: the WATCH is gone, nothing was sent.
                await conn.disconnect(nowait=True)
                self._watching = False
                raise StorageUnavailableError(
                    f"the connection to {storage.where} holding this transaction's WATCH on "
                    f"{self.actor} was lost before {action}; nothing was written: retry the "
                    f"transaction"
                )
            self._watching = False  # EXEC ends the WATCH; a failed round trip drops the connection
            try:
                return await roundtrip(conn, packed, count)
            except Exception as exc:
                raise storage._translate(exc, action, sent=commit) from exc

    async def _validate(self) -> None:
        self._refuse_if_failed("what it read cannot be vouched for")
        conn = self._conn
        if conn is None:
            return
        _, result = await self._under_watch(conn, _EMPTY_BLOCK, 2, commit=False)
        if result is None:
            raise TransactionConflictError(
                f"another commit on {self.actor} landed after this read-only transaction read it"
            )
        if isinstance(result, rex.ResponseError):
            raise self._storage._translate(result, "validating reads") from result

    async def _commit(self, writes: Writes) -> None:
        self._refuse_if_failed("nothing was written")
        conn = self._conn
        if conn is None:
            await _send_block(self._storage, self.actor, self._keys, writes)
            return
        deleted = _only_deletes(writes)
        empties = False
        if deleted is not None:
            async with self._lock:
                empties = await _empties(self._storage, conn, self._keys, deleted)
        packed, count = multi_block(self._keys, writes, empties)
        replies = await self._under_watch(conn, packed, count, commit=True)
        judge_block(self._storage, self.actor, replies)

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await dedicated(self._storage).give_back(conn, self._watching)
        self._watching = False
