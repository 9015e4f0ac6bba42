"""``redis://``, ``rediss://``, ``unix://``: actor records in Redis, committed with MULTI/EXEC.

Key layout and hash slots: ``kelpie.storage.redis_keys`` (ADR 0003). Error
translation: ``kelpie.storage.redis_errors``. Operator guide:
``docs/backends/redis.md``.

A commit is one round trip on one connection. A transaction that read
anything pinned a connection at its first read and sent ``WATCH`` on the
actor's version key in the same round trip as that read; its commit sends
``MULTI``, the writes, ``INCR version`` and ``EXEC`` on that connection, and a
nil ``EXEC`` reply is a ``TransactionConflictError`` (nothing was written). A
write-only transaction sends the same ``MULTI``/``EXEC`` block without
``WATCH`` and never conflicts.

kelpie sends and reads every command itself on connections borrowed from a
redis-py pool whose retries are disabled: a transparent retry could apply a
commit twice or hide an outage. Because it knows when a commit's bytes were
handed to the socket, it can tell "nothing was written"
(``StorageUnavailableError``) from "it may have landed"
(``CommitOutcomeUnknownError``).
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kelpie.actor.id import ActorId
from kelpie.errors import (
    ConfigError,
    CorruptStateError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.storage.base import BufferedTransaction, StorageBase, Writes
from kelpie.storage.options import as_float, as_int, as_str, merge_options
from kelpie.storage.redis_errors import translate_redis_error
from kelpie.storage.redis_keys import ActorKeys, actor_keys, check_prefix_name, lex_range
from kelpie.storage.url import StorageURL

__all__ = ["DEFAULT_PREFIX", "RedisStorage", "open_redis"]

DEFAULT_PREFIX = "kelpie"
_DEFAULT_PORT = 6379

_HAS_POLL = hasattr(select, "poll")
_POLL_STALE = select.POLLIN | select.POLLPRI | getattr(select, "POLLRDHUP", 0) if _HAS_POLL else 0

# -- RESP encoding ------------------------------------------------------------
#
# Commands are packed by hand, once per round trip: the argument set is tiny
# (bytes only), and skipping redis-py's per-argument encoder keeps a commit's
# client-side cost below that of a redis-py pipeline doing the same writes.

_Command = Sequence[bytes]


def _pack(commands: Sequence[_Command]) -> bytes:
    out: list[bytes] = []
    append = out.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for arg in command:
            append(b"$%d\r\n" % len(arg))
            append(arg)
            append(b"\r\n")
    return b"".join(out)


_UNWATCH = _pack([(b"UNWATCH",)])


def _commit_commands(keys: ActorKeys, writes: Writes) -> list[_Command]:
    """MULTI, the writes, INCR version, EXEC; every command cannot fail on our own keys."""
    put_fields: list[bytes] = [b"HSET", keys.data]
    put_index: list[bytes] = [b"ZADD", keys.index]
    deleted: list[bytes] = []
    for key, value in writes.items():
        if value is None:
            deleted.append(key)
        else:
            put_fields += (key, value)
            put_index += (b"0", key)
    commands: list[_Command] = [(b"MULTI",)]
    if len(put_fields) > 2:
        commands.append(put_fields)
        commands.append(put_index)
    if deleted:
        commands.append([b"HDEL", keys.data, *deleted])
        commands.append([b"ZREM", keys.index, *deleted])
    commands.append((b"INCR", keys.version))
    commands.append((b"EXEC",))
    return commands


# -- connection handling ------------------------------------------------------


def _socket_looks_stale(conn: AbstractConnection) -> bool:
    """True if an idle connection's socket has anything pending (EOF, RST, stray bytes).

    redis-py only notices a peer that went away once the event loop has run its
    read callback; a zero-timeout ``poll`` asks the kernel directly, so a
    commit is never sent down a socket the server already closed.
    """
    reader = getattr(conn, "_reader", None)
    if reader is not None and reader.at_eof():
        return True
    writer = getattr(conn, "_writer", None)
    transport = getattr(writer, "transport", None)
    if transport is None:  # not connected, or a fake connection (fakeredis)
        return writer is None
    if transport.is_closing():
        return True
    if transport.get_extra_info("sslcontext") is not None:
        return False  # TLS may have protocol records pending; redis-py's own check covers it
    sock = transport.get_extra_info("socket")
    if sock is None or not _HAS_POLL:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), _POLL_STALE)
    return bool(poller.poll(0))


async def _roundtrip(conn: AbstractConnection, packed: bytes, replies: int) -> list[Any]:
    """Send ``packed`` and read ``replies`` replies; error replies come back as values.

    Transport errors propagate (redis-py has already disconnected ``conn``).
    """
    await conn.send_packed_command(packed, check_health=False)
    results: list[Any] = []
    for _ in range(replies):
        try:
            results.append(await conn.read_response(disable_decoding=True))
        except rex.ResponseError as exc:
            results.append(exc)
    return results


def _first_error(replies: Sequence[Any]) -> rex.ResponseError | None:
    for reply in replies:
        if isinstance(reply, rex.ResponseError):
            return reply
    return None


# -- the backend ----------------------------------------------------------------


class _RedisTransaction(BufferedTransaction):
    _storage: RedisStorage

    def __init__(self, storage: RedisStorage, actor: ActorId) -> None:
        super().__init__(storage, actor)
        self._keys = actor_keys(storage.prefix, actor)
        self._conn: AbstractConnection | None = None  # pinned at the first read
        self._watching = False  # WATCH is active on self._conn
        self._broken = False  # the pinned connection failed: its WATCH is gone
        # One request at a time on the pinned connection, even if the caller
        # overlaps operations of this transaction (replies must not interleave).
        self._lock = asyncio.Lock()

    async def _read_on_pin(self, command: _Command, action: str) -> Any:
        async with self._lock:
            return await self._read_on_pin_locked(command, action)

    async def _read_on_pin_locked(self, command: _Command, action: str) -> Any:
        storage = self._storage
        if self._broken:
            raise StorageUnavailableError(
                f"an earlier read of this transaction on {self.actor} lost its connection "
                f"to {storage.where}; abort and retry the transaction"
            )
        try:
            if self._conn is None:
                self._conn = await storage._acquire(self.actor)
                suffix = storage._first_read_suffix(self._keys)
                packed = _pack([(b"WATCH", self._keys.version), command, *suffix])
                self._watching = True
                watch_reply, reply, *suffix_replies = await _roundtrip(
                    self._conn, packed, 2 + len(suffix)
                )
                if isinstance(watch_reply, rex.ResponseError):
                    raise watch_reply
            else:
                suffix_replies = []
                (reply,) = await _roundtrip(self._conn, _pack([command]), 1)
        except Exception as exc:
            self._broken = self._conn is not None
            raise storage._translate(exc, action) from exc
        if isinstance(reply, rex.ResponseError):
            raise storage._translate(reply, action) from reply
        if suffix_replies:
            try:
                storage._check_first_read_suffix(self.actor, suffix_replies)
            except BaseException:
                self._broken = True  # what this transaction read cannot be trusted
                raise
        return reply

    async def _read(self, key: bytes) -> bytes | None:
        reply = await self._read_on_pin((b"HGET", self._keys.data, key), "reading a key")
        return None if reply is None else bytes(reply)

    async def _read_keys(self, prefix: bytes) -> list[bytes]:
        low, high = lex_range(prefix)
        reply = await self._read_on_pin(
            (b"ZRANGEBYLEX", self._keys.index, low, high), "listing keys"
        )
        return [bytes(key) for key in reply]

    async def _commit(self, writes: Writes) -> None:
        async with self._lock:
            await self._commit_locked(writes)

    async def _commit_locked(self, writes: Writes) -> None:
        storage = self._storage
        commands = _commit_commands(self._keys, writes)
        suffix = storage._commit_suffix()
        packed = _pack([*commands, *suffix])
        conn = self._conn
        pinned = conn is not None
        if self._broken:
            raise StorageUnavailableError(
                f"a read of this transaction on {self.actor} lost its connection to "
                f"{storage.where}; nothing was written"
            )
        try:
            if conn is None:
                conn = await storage._acquire(self.actor)
            elif not conn.is_connected or await conn.can_read() or _socket_looks_stale(conn):
                # The connection holding our WATCH died: we can no longer detect
                # a conflicting commit, so refuse before sending anything.
                self._broken = True
                self._watching = False
                await conn.disconnect(nowait=True)
                raise rex.ConnectionError("the pinned connection was closed by the server")
        except Exception as exc:
            raise storage._translate(exc, "committing") from exc
        try:
            replies = await _roundtrip(conn, packed, len(commands) + len(suffix))
        except Exception as exc:
            self._broken = True
            raise storage._translate(exc, "committing", sent=True) from exc
        finally:
            self._watching = False  # EXEC (or a dropped connection) ends every WATCH
            if not pinned:
                await storage._release(conn)
        self._check_exec(replies[: len(commands)])
        if suffix:
            storage._check_commit_suffix(self.actor, replies[len(commands) :])

    def _check_exec(self, replies: list[Any]) -> None:
        storage = self._storage
        result = replies[-1]
        if result is None:
            raise TransactionConflictError(
                f"another commit on {self.actor} landed after this transaction read it"
            )
        if isinstance(result, rex.ResponseError):
            # EXECABORT: a queued command was rejected (OOM, READONLY, NOAUTH...);
            # Redis discarded the whole block. Report the queued command's error.
            cause = _first_error(replies[:-1]) or result
            raise storage._translate(cause, "committing") from cause
        failed = _first_error(result) if isinstance(result, list) else None
        if failed is not None or not isinstance(result, list):
            raise CorruptStateError(
                f"redis at {storage.where} rejected part of a commit on {self.actor} after "
                f"EXEC: a key under prefix {storage.prefix!r} was written by something "
                f"other than kelpie ({failed or result!r})"
            )

    async def _release(self) -> None:
        if self._conn is None:
            return
        async with self._lock:
            await self._release_locked()

    async def _release_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self._watching and conn.is_connected:
                self._watching = False
                try:
                    await _roundtrip(conn, _UNWATCH, 1)
                except Exception:
                    await conn.disconnect(nowait=True)  # dropping it drops its WATCH
        finally:
            await self._storage._release(conn)


def _describe_pool(pool: ConnectionPool) -> str:
    """A password-free URL-like name for a pool's server, for messages and ``repr``."""
    kwargs = pool.connection_kwargs
    db = kwargs.get("db", 0)
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={db}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', _DEFAULT_PORT)}/{db}"


class RedisStorage(StorageBase):
    """Storage on a Redis server through a ``redis.asyncio`` client.

    ``open_redis(url)`` builds the client from a URL. Tests may pass any
    ``redis.asyncio.Redis`` (including ``fakeredis.FakeAsyncRedis``); the
    storage then uses that client's connection pool through the same code
    path, and ``close()`` closes the client unless ``close_client=False``.
    Every key kelpie touches starts with ``prefix + ":"``.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        description: str | None = None,
        close_client: bool = True,
        secret: str | None = None,
    ) -> None:
        self.prefix = check_prefix_name(prefix)
        self._client = client
        self._pool: ConnectionPool = client.connection_pool
        self.where = description or _describe_pool(self._pool)
        self._close_client = close_client
        self._secret = secret or self._pool.connection_kwargs.get("password")

    def __repr__(self) -> str:
        return f"RedisStorage({self.where}, prefix={self.prefix!r})"

    def _translate(self, exc: BaseException, action: str, *, sent: bool = False) -> Exception:
        return translate_redis_error(
            exc, where=self.where, action=action, sent=sent, secret=self._secret
        )

    async def _acquire(self, actor: ActorId) -> AbstractConnection:
        """A connected, clean connection to the server holding ``actor``; raw errors propagate."""
        return await self._checkout(self._pool)

    async def _checkout(self, pool: ConnectionPool) -> AbstractConnection:
        """A connected, clean connection from ``pool``; raw redis errors propagate."""
        conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            if _socket_looks_stale(conn):
                # The server closed it (restart, idle timeout) before the event
                # loop noticed: nothing was sent on it, so reconnecting is safe.
                await conn.disconnect(nowait=True)
                await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await pool.release(conn)
            raise
        return conn

    async def _release(self, conn: AbstractConnection) -> None:
        await self._pool.release(conn)

    def _commit_suffix(self) -> Sequence[_Command]:
        """Commands sent after ``EXEC`` in a commit's round trip (none here; see redis_cluster)."""
        return ()

    def _check_commit_suffix(self, actor: ActorId, replies: list[Any]) -> None:
        """Judge the replies to ``_commit_suffix()`` once ``EXEC`` succeeded."""

    def _first_read_suffix(self, keys: ActorKeys) -> Sequence[_Command]:
        """Commands sent after a transaction's first read, same round trip (none here)."""
        return ()

    def _check_first_read_suffix(self, actor: ActorId, replies: list[Any]) -> None:
        """Judge the replies to ``_first_read_suffix()``; raise to fail the read."""

    async def _run(self, actor: ActorId, command: _Command, action: str) -> Any:
        """One command outside any transaction, on a pooled connection."""
        try:
            conn = await self._acquire(actor)
            try:
                (reply,) = await _roundtrip(conn, _pack([command]), 1)
            finally:
                await self._release(conn)
        except Exception as exc:
            raise self._translate(exc, action) from exc
        if isinstance(reply, rex.ResponseError):
            raise self._translate(reply, action) from reply
        return reply

    async def _get(self, actor: ActorId, key: bytes) -> bytes | None:
        keys = actor_keys(self.prefix, actor)
        reply = await self._run(actor, (b"HGET", keys.data, key), "reading a key")
        return None if reply is None else bytes(reply)

    async def _list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        keys = actor_keys(self.prefix, actor)
        low, high = lex_range(prefix)
        reply = await self._run(actor, (b"ZRANGEBYLEX", keys.index, low, high), "listing keys")
        return [bytes(key) for key in reply]

    def _transaction(self, actor: ActorId) -> _RedisTransaction:
        return _RedisTransaction(self, actor)

    async def _close(self) -> None:
        if not self._close_client:
            return
        try:
            await self._client.aclose()
            await self._pool.aclose()
        except Exception as exc:
            raise self._translate(exc, "closing") from exc


# -- the factory ------------------------------------------------------------------

_COMMON_OPTIONS = {
    "prefix": as_str,
    "socket_timeout": as_float,
    "connect_timeout": as_float,
    "max_connections": as_int,
    "pool_timeout": as_float,
}
_SSL_OPTIONS = {"ssl_cert_reqs": as_str, "ssl_ca_certs": as_str}
_CERT_REQS = ("none", "optional", "required")


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"option {name!r} must be positive, got {value!r}")
    return value


def _db_number(text: str, scheme: str) -> int:
    try:
        db = int(text)
    except ValueError:
        raise ConfigError(
            f"the database of a {scheme}:// URL must be a number, got {text!r}"
        ) from None
    if db < 0:
        raise ConfigError(f"the database of a {scheme}:// URL must be >= 0, got {db}")
    return db


def open_redis(url: str, **options: Any) -> RedisStorage:
    """Factory for ``redis://``, ``rediss://`` and ``unix://`` URLs; no network I/O.

    ``redis://[user:password@]host[:port][/db][?prefix=NAME]``; ``rediss://``
    adds TLS (options ``ssl_cert_reqs`` = none|optional|required,
    ``ssl_ca_certs`` = a CA bundle path); ``unix:///path.sock?db=N``. Options
    (URL query or keyword): ``prefix`` (default ``kelpie``), ``socket_timeout``
    (5.0 s), ``connect_timeout`` (2.0 s), ``max_connections`` (100),
    ``pool_timeout`` (5.0 s waiting for a free connection).
    """
    parsed = StorageURL.parse(url)
    scheme = parsed.scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"open_redis cannot open {scheme}:// URLs")
    known: dict[str, Any] = dict(_COMMON_OPTIONS)
    if scheme == "rediss":
        known.update(_SSL_OPTIONS)
    if scheme == "unix":
        known["db"] = as_str
    opts = merge_options(scheme, parsed.options, options, known)
    if parsed.hosts:
        raise ConfigError(
            f"a {scheme}:// URL names one server; for Redis Cluster seeds use "
            "redis+cluster://host:port,host:port"
        )

    prefix = check_prefix_name(opts.get("prefix", DEFAULT_PREFIX))
    socket_timeout = _positive("socket_timeout", opts.get("socket_timeout", 5.0))
    connect_timeout = _positive("connect_timeout", opts.get("connect_timeout", 2.0))
    pool_timeout = _positive("pool_timeout", opts.get("pool_timeout", 5.0))
    max_connections = opts.get("max_connections", 100)
    if max_connections < 1:
        raise ConfigError(f"option 'max_connections' must be at least 1, got {max_connections}")

    kwargs: dict[str, Any] = {
        "username": parsed.username,
        "password": parsed.password,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        # No transparent retries anywhere: a retried EXEC could apply twice.
        "retry": Retry(NoBackoff(), 0),
        "retry_on_error": [],
        "protocol": 2,
        "driver_info": None,
        "health_check_interval": 0,
    }
    connection_class: type[AbstractConnection]
    if scheme == "unix":
        if parsed.host:
            raise ConfigError(
                "a unix:// URL names a socket path: unix:///path/to/redis.sock "
                f"(got host {parsed.host!r})"
            )
        if not parsed.path.startswith("/"):
            raise ConfigError("a unix:// URL needs an absolute socket path: unix:///path.sock")
        connection_class = UnixDomainSocketConnection
        kwargs["path"] = parsed.path
        kwargs["db"] = _db_number(opts.get("db", "0"), scheme)
    else:
        if not parsed.host:
            raise ConfigError(f"a {scheme}:// URL needs a host: {scheme}://localhost:6379/0")
        db_text = parsed.path.strip("/")
        if "/" in db_text:
            raise ConfigError(f"the path of a {scheme}:// URL is the database number, e.g. /0")
        kwargs["host"] = parsed.host
        kwargs["port"] = parsed.port if parsed.port is not None else _DEFAULT_PORT
        kwargs["db"] = _db_number(db_text, scheme) if db_text else 0
        connection_class = Connection
        if scheme == "rediss":
            connection_class = SSLConnection
            cert_reqs = opts.get("ssl_cert_reqs", "required")
            if cert_reqs not in _CERT_REQS:
                raise ConfigError(
                    f"option 'ssl_cert_reqs' must be one of {', '.join(_CERT_REQS)}, "
                    f"got {cert_reqs!r}"
                )
            kwargs["ssl_cert_reqs"] = cert_reqs
            kwargs["ssl_check_hostname"] = cert_reqs == "required"
            if "ssl_ca_certs" in opts:
                kwargs["ssl_ca_certs"] = opts["ssl_ca_certs"]

    pool = BlockingConnectionPool(
        connection_class=connection_class,
        max_connections=max_connections,
        timeout=pool_timeout,
        **kwargs,
    )
    client = aioredis.Redis.from_pool(pool)
    return RedisStorage(
        client,
        prefix=prefix,
        description=parsed.render(),
        secret=parsed.password,
    )
