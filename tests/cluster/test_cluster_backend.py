"""The redis+cluster:// backend: URLs, routing by hash slot, redirections, WAIT."""

from __future__ import annotations

import asyncio
import socket

import pytest
import redis.exceptions as rex

from kelpie import ActorId, open_storage
from kelpie.errors import CommitOutcomeUnknownError, ConfigError, StorageUnavailableError
from kelpie.storage.redis.cluster import RedisClusterStorage, open_redis_cluster
from kelpie.storage.redis.keys import actor_keys
from kelpie.testing.redis_cluster import RedisCluster, cluster_command, key_slot


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _open(url: str, **options: object) -> RedisClusterStorage:
    storage = open_storage(url, **options)
    assert isinstance(storage, RedisClusterStorage)
    return storage


# -- URLs and options ----------------------------------------------------------------


def test_url_names_several_seeds_and_hides_the_password() -> None:
    storage = open_redis_cluster(
        "redis+cluster://u:s3cret@127.0.0.1:7000,127.0.0.1:7001?prefix=app&wait_replicas=1"
    )
    assert "s3cret" not in repr(storage)
    assert "127.0.0.1:7000,127.0.0.1:7001" in repr(storage)
    assert storage.prefix == "app"
    assert storage.wait_replicas == 1


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis+cluster://127.0.0.1:7000?bogus=1", "bogus"),
        ("redis+cluster://127.0.0.1:7000/3", "database 0"),
        ("redis+cluster://127.0.0.1:7000?wait_timeout_ms=0", "wait_timeout_ms"),
        ("redis+cluster://127.0.0.1:7000?wait_replicas=-1", "wait_replicas"),
        ("redis+cluster://127.0.0.1:7000?wait_replicas=1&wait_timeout_ms=9000", "socket_timeout"),
        ("redis+cluster://127.0.0.1:7000,:7001", "empty host"),
        ("redis://127.0.0.1:7000,127.0.0.1:7001/0", "names one server"),
    ],
)
def test_bad_urls_are_config_errors(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        open_storage(url)


# -- routing ---------------------------------------------------------------------------


async def test_each_actor_lives_on_the_master_of_its_slot(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    async with _open(redis_cluster.url, prefix=prefix) as storage:
        actors = [ActorId("acct", f"a{i}") for i in range(30)]
        for actor in actors:
            async with storage.transaction(actor) as txn:
                await txn.get(b"k")
                await txn.set(b"k", actor.id.encode())
        masters = set()
        for actor in actors:
            keys = actor_keys(prefix, actor)
            slot = key_slot(keys.version)
            master = redis_cluster.master_of_slot(slot)
            masters.add(master)
            assert storage.master_of(actor) == ("127.0.0.1", master)
            for key in (keys.version, keys.data, keys.index):
                assert cluster_command(master, "EXISTS", key.decode()) == "1"
            assert await storage.get(actor, b"k") == actor.id.encode()
        assert masters == set(redis_cluster.masters()), "30 actors should cover all 3 masters"


async def test_a_stale_slot_map_is_unavailable_once_then_refreshed(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    async with _open(redis_cluster.url, prefix=prefix) as storage:
        actor = ActorId("acct", "moved")
        await storage.set(actor, b"k", b"v1")
        right = storage.master_of(actor)
        wrong = next(
            ("127.0.0.1", port) for port in redis_cluster.masters() if ("127.0.0.1", port) != right
        )
        slots = storage._slots
        assert slots is not None
        slot = storage.slot_of(actor)
        refreshes = storage.refreshes

        slots[slot] = wrong  # as if the slot had moved since the map was loaded
        async with storage.transaction(actor) as txn:
            await txn.set(b"k", b"lost")
            with pytest.raises(StorageUnavailableError, match="slot moved"):
                await txn.commit()
        assert await storage.get(actor, b"k") == b"v1"  # nothing was written; map refreshed
        assert storage.refreshes == refreshes + 1

        slots = storage._slots
        assert slots is not None
        slots[slot] = wrong
        with pytest.raises(StorageUnavailableError):
            async with storage.transaction(actor) as txn:
                await txn.get(b"k")  # the version GET and the read are redirected
        async with storage.transaction(actor) as txn:
            assert await txn.get(b"k") == b"v1"
            await txn.set(b"k", b"v2")
        assert await storage.get(actor, b"k") == b"v2"


async def test_a_dead_seed_is_skipped(redis_cluster: RedisCluster, prefix: str) -> None:
    live = redis_cluster.nodes[0].port
    url = f"redis+cluster://127.0.0.1:{_dead_port()},127.0.0.1:{live}"
    async with _open(url, prefix=prefix) as storage:
        actor = ActorId("acct", "seeded")
        await storage.set(actor, b"k", b"v")
        assert await storage.get(actor, b"k") == b"v"


async def test_no_reachable_node_is_unavailable_not_a_hang() -> None:
    url = f"redis+cluster://127.0.0.1:{_dead_port()},127.0.0.1:{_dead_port()}"
    async with _open(url, connect_timeout=0.5) as storage:
        actor = ActorId("acct", "nowhere")
        with pytest.raises(StorageUnavailableError):
            await storage.get(actor, b"k")
        with pytest.raises(StorageUnavailableError):
            await storage.set(actor, b"k", b"v")


# -- WAIT ------------------------------------------------------------------------------


async def test_wait_replicas_acknowledges_once_a_replica_has_the_commit(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    async with _open(redis_cluster.url, prefix=prefix, wait_replicas=1) as storage:
        actor = ActorId("acct", "waited")
        await storage.set(actor, b"k", b"v")
        assert await storage.get(actor, b"k") == b"v"


async def test_fewer_replicas_than_wait_replicas_is_an_unknown_outcome(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    # Each master has one replica: WAIT 2 can only time out with 1.
    async with _open(
        redis_cluster.url, prefix=prefix, wait_replicas=2, wait_timeout_ms=100
    ) as storage:
        actor = ActorId("acct", "underreplicated")
        with pytest.raises(CommitOutcomeUnknownError, match="1 of 2 replicas"):
            await storage.set(actor, b"k", b"v")
        # It did land on the master (and may be lost by a failover): reload decides.
        assert await storage.get(actor, b"k") == b"v"


async def test_with_wait_a_transaction_does_not_start_on_unconfirmed_data(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    async with _open(
        redis_cluster.url, prefix=prefix, wait_replicas=2, wait_timeout_ms=100
    ) as storage:
        actor = ActorId("acct", "unconfirmed")
        with pytest.raises(StorageUnavailableError, match="could not confirm"):
            async with storage.transaction(actor) as txn:
                await txn.get(b"k")
                await txn.set(b"k", b"never")
        assert await storage.get(actor, b"k") is None


def _wait_calls(redis_cluster: RedisCluster, address: tuple[str, int] | None) -> int:
    assert address is not None
    entry = redis_cluster.node(address[1]).info("commandstats").get("cmdstat_wait", "")
    fields = dict(part.split("=", 1) for part in entry.split(",") if "=" in part)
    return int(fields.get("calls", "0"))


async def _actors_on_one_master(
    storage: RedisClusterStorage, name: str, count: int
) -> list[ActorId]:
    first = ActorId("acct", f"{name}-0")
    await storage.get(first, b"k")  # loads the slot map
    master = storage.master_of(first)
    candidates = (ActorId("acct", f"{name}-{n}") for n in range(count * 10))
    return [actor for actor in candidates if storage.master_of(actor) == master][:count]


async def test_group_commit_sends_one_wait_per_batch_of_commits(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    async with _open(redis_cluster.url, prefix=prefix, wait_replicas=1) as storage:
        actors = await _actors_on_one_master(storage, "batched", 24)
        master = storage.master_of(actors[0])
        await storage.set(actors[0], b"warm", b"up")  # loads the commit script
        mux = storage.multiplexer(master)
        assert mux is not None
        batches, waits = mux.batcher.batches, _wait_calls(redis_cluster, master)

        await asyncio.gather(*(storage.set(actor, b"k", b"v") for actor in actors))

        round_trips = mux.batcher.batches - batches
        assert round_trips < len(actors)
        assert _wait_calls(redis_cluster, master) - waits == round_trips
        assert [await storage.get(actor, b"k") for actor in actors] == [b"v"] * len(actors)


async def test_a_batch_short_of_replicas_is_unknown_for_each_of_its_commits(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    async with _open(
        redis_cluster.url, prefix=prefix, wait_replicas=2, wait_timeout_ms=100
    ) as storage:
        actors = await _actors_on_one_master(storage, "short", 6)
        outcomes = await asyncio.gather(
            *(storage.set(actor, b"k", b"v") for actor in actors), return_exceptions=True
        )
        for outcome in outcomes:
            assert isinstance(outcome, CommitOutcomeUnknownError)
        # Each landed on the master (and may be lost by a failover): reload decides.
        assert [await storage.get(actor, b"k") for actor in actors] == [b"v"] * len(actors)


@pytest.mark.parametrize(
    "error",
    [
        rex.MovedError("3999 127.0.0.1:7001"),
        rex.AskError("3999 127.0.0.1:7001"),
        rex.ClusterDownError("CLUSTERDOWN The cluster is down"),
        rex.MasterDownError("MASTERDOWN Link with MASTER is down"),
        rex.TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        rex.ReadOnlyError("READONLY You can't write against a read only replica."),
        rex.ConnectionError("Connection refused"),
        ConnectionResetError("reset"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_topology_errors_are_unavailable_and_refresh_the_slot_map(error: Exception) -> None:
    storage = open_redis_cluster("redis+cluster://127.0.0.1:7000")
    storage._stale = False
    translated = storage._translate(error, "reading a key")
    assert type(translated) is StorageUnavailableError
    assert storage._stale
    # Once a commit may have reached a server, a lost connection is an unknown outcome.
    if isinstance(error, rex.ConnectionError | OSError):
        assert isinstance(
            storage._translate(error, "committing", sent=True), CommitOutcomeUnknownError
        )
