"""``redis+cluster://``: actor records in Redis Cluster, one hash slot per actor.

Every record of an actor lives in one hash slot (the hash tag of
``kelpie.storage.redis.keys``), so a transaction is exactly the single-server
one of ``kelpie.storage.redis`` — ``GET version`` with the first read, then
one check-and-set script (``EVALSHA``) as the commit (ADR 0008) — sent to the
master that owns the actor's slot. With ``group_commit`` (the default) each
node has one multiplexed connection (``kelpie.storage.redis.pipeline``).
This module only adds the routing:

- a slot map built from ``CLUSTER SLOTS`` (asked of any reachable node, seeds
  first time) and one no-retry connection pool per node;
- a server that answers ``CLUSTER SLOTS`` with "cluster support disabled" (a
  plain Redis, not a cluster node) is a ``ConfigError``: retrying cannot help;
- ``MOVED``/``ASK``/``CLUSTERDOWN``/``TRYAGAIN``/``READONLY``, a refused or
  broken connection: the map is marked stale (refreshed before the next
  operation) and the caller gets ``StorageUnavailableError`` — or
  ``CommitOutcomeUnknownError`` once a commit's bytes may have reached a
  server, exactly as on one server. Nothing is retried behind the caller's
  back, so an outage is bounded by the connect and socket timeouts;
- ``wait_replicas=N``: ONE ``WAIT N wait_timeout_ms`` follows every batch
  that holds commits (every commit, without group commit), in the same round
  trip, and its reply judges each commit of the batch: a commit is
  acknowledged only when N replicas have it, and fewer is
  ``CommitOutcomeUnknownError`` (it is on the master and may be lost by a
  failover). A transaction's first read is followed by a tiny write to the
  actor's marker key (``…:w``) and ``WAIT`` too, so a transaction never
  starts from — nor replays an idempotent result of — a commit the replicas
  have not confirmed (``StorageUnavailableError`` otherwise). See
  ``docs/scale-out.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.exceptions as rex
from redis.asyncio.connection import BlockingConnectionPool, Connection, ConnectionPool
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from kelpie.errors import CommitOutcomeUnknownError, ConfigError, StorageUnavailableError
from kelpie.identity import ActorId
from kelpie.storage.base import Writes
from kelpie.storage.group_commit import DEFAULT_MAX_BATCH
from kelpie.storage.options import as_int, merge_options
from kelpie.storage.redis.keys import ActorKeys, check_prefix_name
from kelpie.storage.redis.pipeline import pack, roundtrip
from kelpie.storage.redis.storage import COMMON_OPTIONS, DEFAULT_PREFIX, CommonOptions, RedisStorage
from kelpie.storage.redis.sweep import Sweep, list_on_cluster
from kelpie.storage.url import StorageURL

__all__ = ["RedisClusterStorage", "open_redis_cluster"]

_DEFAULT_PORT = 6379
_CLUSTER_SLOTS = pack([(b"CLUSTER", b"SLOTS")])

Address = tuple[str, int]

# What a server without cluster mode answers to CLUSTER SLOTS
# ("ERR This instance has cluster support disabled").
_CLUSTER_DISABLED = "cluster support disabled"

# Failures to load the slot map that retrying cannot cure: the storage URL is wrong.
_CREDENTIAL_ERRORS = (rex.AuthenticationError, rex.AuthorizationError, rex.NoPermissionError)

# Replies and failures after which the slot map may be wrong: refresh it.
_TOPOLOGY_ERRORS = (
    rex.AskError,  # MOVED is a subclass
    rex.ClusterDownError,  # CLUSTERDOWN, MASTERDOWN
    rex.TryAgainError,
    rex.ReadOnlyError,
    rex.ConnectionError,
    rex.TimeoutError,
    OSError,
    EOFError,
)


class _NotInClusterModeError(rex.RedisError):
    """A seed is a plain Redis server: it answered CLUSTER SLOTS with "cluster support
    disabled". Raised by the slot-map refresh, translated into a ``ConfigError``."""

    def __init__(self, address: Address, answer: str) -> None:
        super().__init__(f"{address[0]}:{address[1]} answered CLUSTER SLOTS with {answer!r}")
        self.address = address
        self.answer = answer


class RedisClusterStorage(RedisStorage):
    """Storage on a Redis Cluster: the Redis backend's transactions, routed by hash slot.

    Built by ``open_redis_cluster(url)``; ``seeds`` are the nodes asked for the
    slot map first. ``connection_kwargs`` configure every node's pool (no
    retries, ever: a retried commit could apply twice).
    """

    _per_slot = True  # an actor index and delete counter per hash slot (ADR 0014)

    def __init__(
        self,
        seeds: Sequence[Address],
        *,
        connection_kwargs: dict[str, Any],
        prefix: str = DEFAULT_PREFIX,
        description: str,
        secret: str | None = None,
        max_connections: int = 100,
        pool_timeout: float = 5.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        group_commit: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        # RedisStorage.__init__ wants one client; a cluster has one pool per node.
        if not seeds:
            raise ConfigError("a redis+cluster:// URL needs at least one seed host:port")
        self.prefix = check_prefix_name(prefix)
        self.where = description
        self._secret = secret
        self._close_client = True
        self.commit_mode = "script"  # one check-and-set script per commit (ADR 0008)
        self._seeds: tuple[Address, ...] = tuple(seeds)
        self._connection_kwargs = dict(connection_kwargs)
        self._max_connections = max_connections
        self._pool_timeout = pool_timeout
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._refresh_timeout = float(connection_kwargs.get("socket_connect_timeout", 2.0))
        self._pools: dict[Address, BlockingConnectionPool] = {}
        self._init_pipelines(group_commit, max_batch)
        self._known: dict[Address, None] = dict.fromkeys(self._seeds)  # ordered set
        self._slots: list[Address | None] | None = None
        self._stale = True
        self._refresh_lock = asyncio.Lock()
        self.refreshes = 0
        """How many times the slot map was (re)loaded: for tests and metrics."""
        self._sweep: Sweep | None = None  # the last listing's merge, continued by its next page
        self._generation = 0  # bumped by this storage's commits and deletes: drops the sweep

    def __repr__(self) -> str:
        return f"RedisClusterStorage({self.where}, prefix={self.prefix!r})"

    # -- routing ------------------------------------------------------------------

    def _node_pool(self, address: Address) -> BlockingConnectionPool:
        pool = self._pools.get(address)
        if pool is None:
            pool = BlockingConnectionPool(
                connection_class=Connection,
                max_connections=self._max_connections,
                timeout=self._pool_timeout,
                host=address[0],
                port=address[1],
                **self._connection_kwargs,
            )
            self._pools[address] = pool
        return pool

    def slot_of(self, actor: ActorId) -> int:
        """The hash slot holding every record of ``actor``."""
        return int(key_slot(self._actor_keys(actor).version))

    def master_of(self, actor: ActorId) -> Address | None:
        """The master this storage currently routes ``actor`` to (``None`` before first use)."""
        slots = self._slots
        return None if slots is None else slots[self.slot_of(actor)]

    async def _pool_for(self, actor: ActorId) -> tuple[object, ConnectionPool]:
        return await self._route_slot(self.slot_of(actor))

    async def _route_slot(self, slot: int | None) -> tuple[object, ConnectionPool]:
        if self._stale or self._slots is None:
            await self._refresh()
        slots = self._slots
        assert slots is not None and slot is not None
        address = slots[slot]
        if address is None:
            self._stale = True
            raise rex.ClusterDownError(f"CLUSTERDOWN no master serves hash slot {slot}")
        return address, self._node_pool(address)

    async def _masters(self) -> list[tuple[object, ConnectionPool]]:
        if self._stale or self._slots is None:
            await self._refresh()
        assert self._slots is not None
        masters = dict.fromkeys(address for address in self._slots if address is not None)
        if len(masters) == 0 or None in self._slots:
            self._stale = True
            raise rex.ClusterDownError("CLUSTERDOWN some hash slots have no master")
        return [(address, self._node_pool(address)) for address in masters]

    def _actors_changed(self) -> None:
        self._generation += 1

    async def _list_actors(
        self, namespace: str | None, after: ActorId | None, limit: int
    ) -> list[ActorId]:
        return await list_on_cluster(self, namespace, after, limit)

    async def _commit(
        self, actor: ActorId, keys: ActorKeys, expected: bytes, writes: Writes
    ) -> None:
        self._generation += 1
        await super()._commit(actor, keys, expected, writes)

    async def _refresh(self) -> None:
        """Reload the slot map from the first node that answers ``CLUSTER SLOTS``."""
        async with self._refresh_lock:
            if not self._stale and self._slots is not None:
                return  # another task refreshed it while this one waited
            last: BaseException | None = None
            not_cluster: _NotInClusterModeError | None = None
            for address in list(self._known):
                try:
                    reply = await self._ask_slots(address)
                except (rex.RedisError, OSError, EOFError, TimeoutError) as exc:
                    reply = exc
                if isinstance(reply, rex.ResponseError) and _CLUSTER_DISABLED in str(reply):
                    not_cluster = not_cluster or _NotInClusterModeError(address, str(reply))
                if isinstance(reply, BaseException) or not isinstance(reply, list):
                    last = reply if isinstance(reply, BaseException) else None
                    # Ask a node that failed last next time (a paused node costs a timeout).
                    del self._known[address]
                    self._known[address] = None
                    continue
                self._known = {address: None, **self._known}  # ask it first next time
                self._slots = self._build_map(address, reply)
                self._stale = False
                self.refreshes += 1
                return
            # Nothing to route by. A node that is no cluster node, or credentials
            # the nodes reject, will not cure themselves: say so, not "retry".
            if not_cluster is not None:
                raise not_cluster
            if isinstance(last, _CREDENTIAL_ERRORS):
                raise last
            raise rex.ConnectionError(f"no cluster node answered CLUSTER SLOTS (last: {last!r})")

    async def _ask_slots(self, address: Address) -> Any:
        pool = self._node_pool(address)
        conn = await self._checkout(pool)
        try:
            async with asyncio.timeout(self._refresh_timeout):
                (reply,) = await roundtrip(conn, _CLUSTER_SLOTS, 1)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)
        return reply

    def _build_map(self, asked: Address, reply: list[Any]) -> list[Address | None]:
        slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        for entry in reply:
            start, end, master, *replicas = entry
            address = self._address(asked, master)
            for slot in range(int(start), int(end) + 1):
                slots[slot] = address
            self._known[address] = None
            for replica in replicas:
                self._known[self._address(asked, replica)] = None
        return slots

    @staticmethod
    def _address(asked: Address, node: list[Any]) -> Address:
        host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
        if host in ("", "?"):
            host = asked[0]  # "the host you asked", per the CLUSTER SLOTS spec
        return host, int(node[1])

    # -- errors and WAIT -----------------------------------------------------------

    def _translate(self, exc: BaseException, action: str, *, sent: bool = False) -> Exception:
        if isinstance(exc, _NotInClusterModeError):
            host, port = exc.address
            answer = exc.answer.replace(self._secret, "***") if self._secret else exc.answer
            return ConfigError(
                f"server {host}:{port} of {self.where} is not in cluster mode (it answered "
                f"CLUSTER SLOTS with {answer!r}) while {action}: a redis+cluster:// URL names "
                f"nodes of a Redis Cluster; for one server use redis://{host}:{port}"
            )
        if isinstance(exc, _TOPOLOGY_ERRORS):
            self._stale = True
        if isinstance(exc, rex.AskError):
            # MOVED/ASK: the commit script or a read went to a node that no
            # longer owns the slot; it was refused before running.
            return StorageUnavailableError(
                f"the hash slot moved while {action} on {self.where}; nothing was "
                f"written; the slot map is being refreshed, retry ({exc})"
            )
        return super()._translate(exc, action, sent=sent)

    def _commit_suffix(self) -> Sequence[Sequence[bytes]]:
        if not self.wait_replicas:
            return ()
        return ((b"WAIT", b"%d" % self.wait_replicas, b"%d" % self.wait_timeout_ms),)

    def _check_commit_suffix(self, actor: ActorId, replies: list[Any]) -> None:
        (acked,) = replies
        if isinstance(acked, int) and acked >= self.wait_replicas:
            return
        self._stale = True  # a master without its replicas may be about to fail over
        raise CommitOutcomeUnknownError(
            f"the commit on {actor} landed on its master but only {acked!r} of "
            f"{self.wait_replicas} replicas confirmed it within {self.wait_timeout_ms} ms "
            f"(WAIT): a failover may still lose it; reload before deciding"
        )

    def _first_read_suffix(self, keys: ActorKeys) -> Sequence[Sequence[bytes]]:
        if not self.wait_replicas:
            return ()
        # WAIT only covers this connection's own writes: a tiny replicated write
        # in the actor's slot makes it cover everything the master holds, so a
        # transaction never trusts (nor replays an idempotent result from) a
        # commit that a failover could still lose.
        marker = keys.version[:-1] + b"w"
        return (
            (b"SET", marker, b"", b"PX", b"60000"),
            (b"WAIT", b"%d" % self.wait_replicas, b"%d" % self.wait_timeout_ms),
        )

    def _check_first_read_suffix(self, actor: ActorId, replies: list[Any]) -> None:
        marked, acked = replies
        if isinstance(marked, rex.ResponseError):
            raise self._translate(marked, "confirming replicas") from marked
        if isinstance(acked, int) and acked >= self.wait_replicas:
            return
        self._stale = True
        raise StorageUnavailableError(
            f"the master of {actor} could not confirm its data on {self.wait_replicas} "
            f"replicas within {self.wait_timeout_ms} ms (WAIT answered {acked!r}): what it "
            f"holds may not survive a failover; nothing was written, retry later"
        )

    async def _close(self) -> None:
        failure: BaseException | None = None
        try:
            await self._close_multiplexers()
        except Exception as exc:
            failure = exc
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            try:
                await pool.aclose()
            except Exception as exc:  # close every pool, report the first failure
                failure = failure or exc
        if failure is not None:
            raise self._translate(failure, "closing") from failure


# -- the factory ------------------------------------------------------------------

_OPTIONS = {**COMMON_OPTIONS, "wait_replicas": as_int, "wait_timeout_ms": as_int}


def _describe(parsed: StorageURL, seeds: Sequence[Address]) -> str:
    """The URL for messages: every seed with its port, the query, never the password."""
    auth = ""
    if parsed.username is not None or parsed.password is not None:
        auth = (parsed.username or "") + (":***" if parsed.password is not None else "") + "@"
    hosts = ",".join(f"{host}:{port}" for host, port in seeds)
    query = "&".join(f"{name}={value}" for name, value in parsed.query)
    return f"{parsed.scheme}://{auth}{hosts}" + (f"?{query}" if query else "")


def open_redis_cluster(url: str, **options: Any) -> RedisClusterStorage:
    """Factory for ``redis+cluster://[user:password@]host:port[,host:port...]``; no I/O.

    Options (URL query or keyword): ``prefix`` (``kelpie``), ``socket_timeout``
    (5.0 s), ``connect_timeout`` (2.0 s), ``max_connections`` (100 per node),
    ``pool_timeout`` (5.0 s), ``wait_replicas`` (0: acknowledge on the
    master's reply; N: only once ``WAIT`` confirms N replicas),
    ``wait_timeout_ms`` (1000; must stay below ``socket_timeout``),
    ``group_commit`` (true: one multiplexed connection per node) and
    ``max_batch`` (most requests per round trip), as for ``redis://``.
    """
    parsed = StorageURL.parse(url)
    if parsed.scheme != "redis+cluster":
        raise ConfigError(f"open_redis_cluster cannot open {parsed.scheme}:// URLs")
    opts = merge_options(parsed.scheme, parsed.options, options, _OPTIONS)
    if parsed.path.strip("/"):
        raise ConfigError("Redis Cluster has database 0 only: a redis+cluster:// URL has no path")
    seeds = [(host, port or _DEFAULT_PORT) for host, port in parsed.hosts] or (
        [(parsed.host, parsed.port or _DEFAULT_PORT)] if parsed.host else []
    )
    if not seeds:
        raise ConfigError("a redis+cluster:// URL needs a seed: redis+cluster://host:port")
    common = CommonOptions.check(opts)
    wait_replicas = opts.get("wait_replicas", 0)
    if wait_replicas < 0:
        raise ConfigError(f"option 'wait_replicas' must be >= 0, got {wait_replicas}")
    wait_timeout_ms = opts.get("wait_timeout_ms", 1000)
    if wait_timeout_ms < 1:
        # WAIT n 0 blocks forever: kelpie never waits without a bound.
        raise ConfigError(f"option 'wait_timeout_ms' must be at least 1, got {wait_timeout_ms}")
    if wait_replicas and wait_timeout_ms >= common.socket_timeout * 1000:
        raise ConfigError(
            f"option 'wait_timeout_ms' ({wait_timeout_ms}) must be below socket_timeout "
            f"({common.socket_timeout} s), or the reply to WAIT would time out first"
        )
    return RedisClusterStorage(
        seeds,
        connection_kwargs=common.connection_kwargs(parsed),
        prefix=common.prefix,
        description=_describe(parsed, seeds),
        secret=parsed.password,
        max_connections=common.max_connections,
        pool_timeout=common.pool_timeout,
        wait_replicas=wait_replicas,
        wait_timeout_ms=wait_timeout_ms,
        group_commit=common.group_commit,
        max_batch=common.max_batch,
    )
