"""``redis://``, ``rediss://``, ``unix://``: actor records in Redis, one check-and-set per commit.

Key layout and hash slots: ``kelpie.storage.redis.keys`` (ADR 0003). The
commit protocol and why it needs no ``WATCH``: ADR 0008. Connections and
group commit: ``kelpie.storage.redis.pipeline``. Error translation:
``kelpie.storage.redis.errors``. Operator guide: ``docs/backends/redis.md``.

A transaction's first read sends ``GET version`` and the read command in one
request (Redis runs one connection's commands in order) and remembers the
version (none = 0); later reads send just the command. ``commit()`` is ONE
request: ``EVALSHA`` of a Lua script that compares the actor's version with
the remembered one (no comparison for a write-only transaction), applies
every put and delete, ``INCR``s the version and answers 0 on a conflict
(``TransactionConflictError``, nothing written). A script runs atomically
and touches one hash slot, like the ``MULTI``/``EXEC`` block it replaced.

With ``group_commit`` (the default) every request to a server goes through
one multiplexed connection: requests that arrive while a batch is on the
wire are sent together, in one round trip. With ``group_commit=false`` each
request goes alone on a pooled connection. Either way kelpie sends and reads
every command itself with redis-py's retries disabled (a transparent retry
could apply a commit twice or hide an outage) and knows when a commit's
bytes were handed to the socket, so it can tell "nothing was written"
(``StorageUnavailableError``) from "it may have landed"
(``CommitOutcomeUnknownError``).

The script itself: ``kelpie.storage.redis.script``. ``commit=multi`` (or a
server that answers the script ``NOPERM`` or "unknown command", logged once,
then kept for the storage) commits with ``WATCH``/``MULTI``/``EXEC`` instead:
``kelpie.storage.redis.multi`` (ADR 0011). ``list_actors``/``delete_actor``:
``kelpie.storage.redis.actors`` (ADR 0014).
"""

from __future__ import annotations

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

from kelpie.errors import (
    ConfigError,
    CorruptStateError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.base import BufferedTransaction, StorageBase, Writes
from kelpie.storage.group_commit import DEFAULT_MAX_BATCH
from kelpie.storage.options import as_str, merge_options
from kelpie.storage.redis.actors import delete_actor_keys, list_on_server
from kelpie.storage.redis.errors import translate_redis_error
from kelpie.storage.redis.keys import (
    ActorKeys,
    RedisReads,
    actor_keys,
    check_prefix_name,
    lex_range,
)
from kelpie.storage.redis.multi import (
    COMMIT_MODES,
    Dedicated,
    MultiTransaction,
    commit_expecting,
    fall_back_to_multi,
    refuses_scripting,
)
from kelpie.storage.redis.options import (
    _CERT_REQS,
    _SSL_OPTIONS,
    COMMON_OPTIONS,
    DEFAULT_PREFIX,
    CommonOptions,
)
from kelpie.storage.redis.pipeline import (
    Command,
    Multiplexer,
    Request,
    checkout,
    pack,
    roundtrip,
)
from kelpie.storage.redis.script import (
    COMMIT_SCRIPT,
    EVAL_HEAD,
    EVALSHA_HEAD,
    commit_call,
    packed_keys,
    parse_token,
)
from kelpie.storage.url import StorageURL

__all__ = [
    "COMMIT_SCRIPT",
    "COMMON_OPTIONS",
    "DEFAULT_PREFIX",
    "CommonOptions",
    "RedisStorage",
    "open_redis",
]


# The names the script's tests import from here (the script moved to redis_script).
_EVAL_HEAD, _EVALSHA_HEAD, _commit_call = EVAL_HEAD, EVALSHA_HEAD, commit_call
_DEFAULT_PORT = 6379

# -- the backend ----------------------------------------------------------------


class _RedisTransaction(RedisReads):
    _storage: RedisStorage

    def __init__(self, storage: RedisStorage, actor: ActorId) -> None:
        super().__init__(storage, actor)
        self._keys = storage._actor_keys(actor)
        self._version: bytes | None = None  # the actor's fence token at the first read
        self._failed = False  # a read failed: what this transaction saw cannot be trusted

    async def _read_command(self, command: Command, action: str) -> Any:
        storage = self._storage
        first = self._version is None
        if first:
            commands = [command, *storage._first_read_suffix(self._keys)]
            packed = packed_keys(self._keys)[0] + pack(commands)  # GET version first
            request = Request(packed, 1 + len(commands), False, action)
        else:
            request = Request(pack([command]), 1, False, action)
        try:
            replies = await storage._send(self.actor, request)
            if not first:
                (reply,) = replies
            else:
                version_reply, reply, *suffix_replies = replies
                version = self._version_from(version_reply, action)
                if suffix_replies:
                    storage._check_first_read_suffix(self.actor, suffix_replies)
                # Overlapping first reads that saw different versions: the actor
                # moved under this transaction; fence on a token that never matches.
                if self._version is None:
                    self._version = version
                elif version != self._version:
                    self._version = b"-"
            if isinstance(reply, rex.ResponseError):
                raise storage._translate(reply, action) from reply
        except BaseException:
            self._failed = True
            raise
        return reply

    def _version_from(self, reply: Any, action: str) -> bytes:
        storage = self._storage
        if isinstance(reply, rex.ResponseError):
            raise storage._translate(reply, action) from reply
        try:
            return parse_token(reply)
        except ValueError as exc:
            raise CorruptStateError(
                f"the version key of {self.actor} at {storage.where} does not hold a "
                f"version: something other than kelpie wrote it ({reply!r})"
            ) from exc

    async def _validate(self) -> None:
        if self._failed:
            raise StorageUnavailableError(
                f"a read of this transaction on {self.actor} failed; what it read cannot be "
                f"vouched for: retry the transaction"
            )
        if self._version is None:
            return
        # The actor's token now, at commit(): a commit that landed after the last
        # read (not only between reads) fails a read-only transaction (guarantee 5).
        keys = self._keys
        reply = await self._storage._run(
            self.actor, (b"MGET", keys.version, keys.deletes), "validating reads"
        )
        if self._version_from(reply, "validating reads") != self._version:
            raise TransactionConflictError(
                f"another commit on {self.actor} landed after this read-only transaction read it"
            )

    async def _commit(self, writes: Writes) -> None:
        if self._failed:
            raise StorageUnavailableError(
                f"a read of this transaction on {self.actor} failed; nothing was written: "
                f"abort and retry the transaction"
            )
        expected = b"" if self._version is None else self._version
        await self._storage._commit(self.actor, self._keys, expected, writes)


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
    ``redis.asyncio.Redis`` (including ``fakeredis.FakeAsyncRedis``, whose
    Lua needs ``lupa``); the storage then uses that client's connection pool
    through the same code path, and ``close()`` closes the client unless
    ``close_client=False``. Every key kelpie touches starts with
    ``prefix + ":"``. ``group_commit`` and ``max_batch``: see the module
    docstring and ``kelpie.storage.redis.pipeline``.
    """

    commit_mode: str = "script"
    _per_slot = False  # Redis Cluster: an actor index and delete counter per hash slot
    _index_ready = False  # the actor index is known to cover older data (ADR 0014)
    _dedicated: Dedicated | None = None  # multi mode's connections for reading transactions
    """``script`` (ADR 0008) or ``multi`` (ADR 0011); ``script`` switches to ``multi``
    for good when the server refuses scripting (a class default, so subclasses that
    do not call this ``__init__``, like Redis Cluster's, stay script-only)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        description: str | None = None,
        close_client: bool = True,
        secret: str | None = None,
        group_commit: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
        commit: str = "script",
    ) -> None:
        self.prefix = check_prefix_name(prefix)
        self._client = client
        self._pool: ConnectionPool = client.connection_pool
        self.where = description or _describe_pool(self._pool)
        self._close_client = close_client
        self._secret = secret or self._pool.connection_kwargs.get("password")
        self._init_pipelines(group_commit, max_batch)
        if commit not in COMMIT_MODES:
            raise ConfigError(f"option 'commit' must be script or multi, got {commit!r}")
        if commit == "multi" and not self._one_server:
            raise ConfigError(f"{type(self).__name__} commits with the script only (commit=script)")
        self.commit_mode = commit

    @property
    def _one_server(self) -> bool:
        """True when every actor lives on ``self._pool`` (not Redis Cluster)."""
        return type(self)._pool_for is RedisStorage._pool_for

    def _init_pipelines(self, group_commit: bool, max_batch: int) -> None:
        if max_batch < 1:
            raise ConfigError(f"option 'max_batch' must be at least 1, got {max_batch}")
        self.group_commit = group_commit
        self.max_batch = max_batch
        self._multiplexers: dict[object, Multiplexer] = {}
        self._single: Multiplexer | None = None  # the multiplexer when there is one server

    def __repr__(self) -> str:
        return f"RedisStorage({self.where}, prefix={self.prefix!r})"

    def _translate(self, exc: BaseException, action: str, *, sent: bool = False) -> Exception:
        return translate_redis_error(
            exc, where=self.where, action=action, sent=sent, secret=self._secret
        )

    def _translate_sent(self, exc: BaseException, action: str, sent: bool) -> Exception:
        error = self._translate(exc, action, sent=sent)
        error.__cause__ = exc
        return error

    # -- where requests go (redis_cluster routes by hash slot) ------------------------

    async def _pool_for(self, actor: ActorId) -> tuple[object, ConnectionPool]:
        """The pool of the server holding ``actor`` and a key naming that server."""
        return None, self._pool

    async def _checkout(self, pool: ConnectionPool) -> AbstractConnection:
        """A connected, clean connection from ``pool``; raw redis errors propagate."""
        return await checkout(pool)

    def multiplexer(self, node: object = None) -> Multiplexer | None:
        """The multiplexer of a server (``None`` before its first use or without group commit).

        Its ``batcher.batches`` and ``batcher.items`` count round trips and requests.
        """
        return self._multiplexers.get(node)

    @property
    def batch_stats(self) -> tuple[int, int]:
        """(round trips, requests) sent through group commit so far, over every server.

        Requests are reads and commits alike (a round trip carries both).
        """
        batchers = [mux.batcher for mux in self._multiplexers.values()]
        return sum(b.batches for b in batchers), sum(b.items for b in batchers)

    async def _send(self, actor: ActorId, request: Request) -> list[Any]:
        """Run ``request`` on the server holding ``actor``: its replies, or a kelpie error.

        Error replies come back as ``ResponseError`` values; a commit's replies
        are followed by those of ``_commit_suffix()``.
        """
        if self._single is not None:  # one server, already connected: the hot path
            return await self._single.submit(request)
        try:
            node, pool = await self._pool_for(actor)
        except Exception as exc:
            raise self._translate(exc, request.action) from exc
        return await self._send_to(node, pool, request)

    async def _send_to(self, node: object, pool: ConnectionPool, request: Request) -> list[Any]:
        """``_send`` to the server ``node`` (``None``: the only one) through ``pool``."""
        if self.group_commit:
            mux = self._multiplexers.get(node)
            if mux is None:
                mux = self._multiplexers[node] = Multiplexer(
                    pool,
                    translate=self._translate_sent,
                    max_batch=self.max_batch,
                    commit_suffix=self._commit_suffix(),
                )
                if node is None:
                    self._single = mux
            return await mux.submit(request)
        packed, replies = request.packed, request.replies
        if request.commit:
            suffix = self._commit_suffix()
            packed += pack(suffix)
            replies += len(suffix)
        try:
            conn = await self._checkout(pool)
        except Exception as exc:
            raise self._translate(exc, request.action) from exc
        try:
            return await roundtrip(conn, packed, replies)
        except Exception as exc:
            raise self._translate(exc, request.action, sent=request.commit) from exc
        finally:
            await pool.release(conn)

    async def _commit(
        self, actor: ActorId, keys: ActorKeys, expected: bytes, writes: Writes
    ) -> None:
        """Run the commit script for ``writes``; raise on a conflict or a failure."""
        packed = commit_call(EVALSHA_HEAD, keys, expected, writes)
        replies = await self._send(actor, Request(packed, 1, True, "committing"))
        if isinstance(replies[0], rex.NoScriptError):
            # Nothing ran; EVAL runs the script and caches it for later EVALSHAs.
            packed = commit_call(EVAL_HEAD, keys, expected, writes)
            replies = await self._send(actor, Request(packed, 1, True, "committing"))
        result, *suffix_replies = replies
        if refuses_scripting(result) and self._one_server:
            fall_back_to_multi(self, result)  # nothing ran: commit this one without a script
            await commit_expecting(self, actor, keys, expected, writes)
            return
        if result == 0:
            raise TransactionConflictError(
                f"another commit on {actor} landed after this transaction read it"
            )
        if isinstance(result, rex.ResponseError):
            raise self._translate(result, "committing") from result
        if not isinstance(result, int):
            raise CorruptStateError(
                f"redis at {self.where} answered {result!r} to a commit on {actor}: "
                f"expected the new version"
            )
        if suffix_replies:
            self._check_commit_suffix(actor, suffix_replies)

    def _commit_suffix(self) -> Sequence[Command]:
        """Commands sent after a batch holding commits (none here; see redis_cluster)."""
        return ()

    def _check_commit_suffix(self, actor: ActorId, replies: list[Any]) -> None:
        """Judge the replies to ``_commit_suffix()`` once the commit succeeded."""

    def _first_read_suffix(self, keys: ActorKeys) -> Sequence[Command]:
        """Commands sent after a transaction's first read, same request (none here)."""
        return ()

    def _check_first_read_suffix(self, actor: ActorId, replies: list[Any]) -> None:
        """Judge the replies to ``_first_read_suffix()``; raise to fail the read."""

    async def _run(self, actor: ActorId, command: Command, action: str) -> Any:
        """One read command outside any transaction."""
        (reply,) = await self._send(actor, Request(pack([command]), 1, False, action))
        if isinstance(reply, rex.ResponseError):
            raise self._translate(reply, action) from reply
        return reply

    async def _get(self, actor: ActorId, key: bytes) -> bytes | None:
        keys = self._actor_keys(actor)
        reply = await self._run(actor, (b"HGET", keys.data, key), "reading a key")
        return None if reply is None else bytes(reply)

    async def _list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        keys = self._actor_keys(actor)
        low, high = lex_range(prefix)
        reply = await self._run(actor, (b"ZRANGEBYLEX", keys.index, low, high), "listing keys")
        return [bytes(key) for key in reply]

    def _actor_keys(self, actor: ActorId) -> ActorKeys:
        """The keys of ``actor``; Redis Cluster indexes actors per hash slot."""
        return actor_keys(self.prefix, actor, self._per_slot)

    async def _list_actors(
        self, namespace: str | None, after: ActorId | None, limit: int
    ) -> list[ActorId]:
        return await list_on_server(self, namespace, after, limit)

    async def _route_slot(self, slot: int | None) -> tuple[object, ConnectionPool]:
        """The server holding hash slot ``slot`` (one server: ``None``, always itself)."""
        return None, self._pool

    async def _masters(self) -> list[tuple[object, ConnectionPool]]:
        """Every server holding actors: ``(node, pool)`` each."""
        return [(None, self._pool)]

    def _actors_changed(self) -> None:
        """This storage deleted an actor (Redis Cluster drops its listing cache)."""

    async def _delete_actor(self, actor: ActorId) -> None:
        await delete_actor_keys(self, actor)

    def _transaction(self, actor: ActorId) -> BufferedTransaction:
        if self.commit_mode == "multi":
            return MultiTransaction(self, actor)
        return _RedisTransaction(self, actor)

    async def _close_multiplexers(self) -> None:
        multiplexers, self._multiplexers = list(self._multiplexers.values()), {}
        self._single = None
        for mux in multiplexers:
            await mux.close()

    async def _close(self) -> None:
        try:
            await self._close_multiplexers()
            if self._dedicated is not None:
                await self._dedicated.close()
            if not self._close_client:
                return
            await self._client.aclose()
            await self._pool.aclose()
        except Exception as exc:
            raise self._translate(exc, "closing") from exc


# -- the factory ------------------------------------------------------------------


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
    ``pool_timeout`` (5.0 s waiting for a free connection), ``group_commit``
    (true: one multiplexed connection, concurrent requests share round trips;
    false: each request alone on a pooled connection), ``max_batch`` (most
    requests one round trip carries, default
    ``kelpie.storage.group_commit.DEFAULT_MAX_BATCH``), ``commit`` (``script``:
    the check-and-set script, switching to ``multi`` for good if the server
    refuses scripting; ``multi``: ``WATCH``/``MULTI``/``EXEC``, ADR 0011).
    """
    parsed = StorageURL.parse(url)
    scheme = parsed.scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"open_redis cannot open {scheme}:// URLs")
    known: dict[str, Any] = dict(COMMON_OPTIONS)
    if scheme == "rediss":
        known.update(_SSL_OPTIONS)
    if scheme == "unix":
        known["db"] = as_str
    known["commit"] = as_str
    opts = merge_options(scheme, parsed.options, options, known)
    if parsed.hosts:
        raise ConfigError(
            f"a {scheme}:// URL names one server; for Redis Cluster seeds use "
            "redis+cluster://host:port,host:port"
        )

    common = CommonOptions.check(opts)
    kwargs = common.connection_kwargs(parsed)
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
        max_connections=common.max_connections,
        timeout=common.pool_timeout,
        **kwargs,
    )
    client = aioredis.Redis.from_pool(pool)
    return RedisStorage(
        client,
        prefix=common.prefix,
        description=parsed.render(),
        secret=parsed.password,
        group_commit=common.group_commit,
        max_batch=common.max_batch,
        commit=opts.get("commit", "script"),
    )
