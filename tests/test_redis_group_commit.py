"""Group commit on Redis (ADR 0008): many actors' requests share one round trip.

Every test runs its own ``redis-server`` on a free loopback port. Round trips
are counted with the multiplexer's ``Batcher`` counters (``batches`` = round
trips, ``items`` = requests) and with ``INFO commandstats`` on the server.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.group_commit import DEFAULT_MAX_BATCH
from kelpie.storage.redis.cluster import open_redis_cluster
from kelpie.storage.redis.keys import actor_keys
from kelpie.storage.redis.pipeline import Multiplexer
from kelpie.storage.redis.storage import RedisStorage, open_redis
from kelpie.storage.registry import open_storage
from kelpie.testing.redis_server import RedisServer
from kelpie.testing.tcp_proxy import CutPoint, TcpProxy
from tests.redis_support import ALICE, bounded


@pytest.fixture
async def storage(server: RedisServer) -> AsyncIterator[RedisStorage]:
    store = open_redis(server.url)
    yield store
    await store.close()


def _mux(store: RedisStorage) -> Multiplexer:
    mux = store.multiplexer()
    assert mux is not None, "the storage has not used its multiplexed connection yet"
    return mux


async def _calls(raw_client: aioredis.Redis, command: str) -> int:
    stats: dict[str, Any] = await raw_client.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


def _actors(count: int) -> list[ActorId]:
    return [ActorId("bank", f"acct-{n}") for n in range(count)]


# -- batching ---------------------------------------------------------------------------


async def test_concurrent_commits_of_many_actors_share_round_trips(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    await storage.set(ALICE, b"warm", b"up")  # connects and loads the script
    mux = _mux(storage)
    batches, items = mux.batcher.batches, mux.batcher.items
    evalsha = await _calls(raw, "evalsha")
    actors = _actors(64)

    await bounded(asyncio.gather(*(storage.set(a, b"k", a.id.encode()) for a in actors)))

    commits = 64
    round_trips = mux.batcher.batches - batches
    print(f"{commits} commits in {round_trips} round trips")
    assert mux.batcher.items - items == commits
    assert round_trips < commits
    assert await _calls(raw, "evalsha") - evalsha == commits
    for actor in actors:
        assert await storage.get(actor, b"k") == actor.id.encode()


async def test_a_conflict_in_a_batch_fails_only_its_own_commit(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    actors = _actors(8)
    for actor in actors:
        await storage.set(actor, b"n", b"0")
    transactions = [storage.transaction(actor) for actor in actors]
    for txn in transactions:
        assert await txn.get(b"n") == b"0"
        await txn.set(b"n", b"1")
    loser = actors[3]
    await raw.incr(actor_keys("kelpie", loser).version)  # a commit on actor 3 lands
    mux = _mux(storage)
    batches = mux.batcher.batches

    outcomes = await bounded(
        asyncio.gather(*(txn.commit() for txn in transactions), return_exceptions=True)
    )

    assert mux.batcher.batches - batches < len(actors)  # they really were batched
    for actor, outcome in zip(actors, outcomes, strict=True):
        if actor == loser:
            assert isinstance(outcome, TransactionConflictError)
            assert await storage.get(actor, b"n") == b"0"
        else:
            assert outcome is None
            assert await storage.get(actor, b"n") == b"1"


async def test_concurrent_increments_of_one_actor_never_lose_an_update(
    storage: RedisStorage,
) -> None:
    counter = ActorId("counter", "hot")

    async def increment_until_committed() -> None:
        while True:
            try:
                async with storage.transaction(counter) as txn:
                    current = int(await txn.get(b"n") or b"0")
                    await asyncio.sleep(0)  # let the others read the same value
                    await txn.set(b"n", b"%d" % (current + 1))
                return
            except TransactionConflictError:
                continue

    await bounded(asyncio.gather(*(increment_until_committed() for _ in range(30))))
    assert await storage.get(counter, b"n") == b"30"


async def test_max_batch_caps_the_requests_of_one_round_trip(server: RedisServer) -> None:
    store = open_redis(server.url, max_batch=4)
    try:
        await store.set(ALICE, b"warm", b"up")
        mux = _mux(store)
        batches, items = mux.batcher.batches, mux.batcher.items
        actors = _actors(21)
        await bounded(asyncio.gather(*(store.set(a, b"k", b"v") for a in actors)))
        assert mux.batcher.items - items == 21
        assert mux.batcher.batches - batches >= 1 + 5  # a leader, then batches of <= 4
    finally:
        await store.close()


async def test_a_hundred_key_commit_is_one_round_trip_and_one_command(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    await storage.set(ALICE, b"warm", b"up")
    mux = _mux(storage)
    await raw.config_resetstat()
    batches, items = mux.batcher.batches, mux.batcher.items

    async with storage.transaction(ALICE) as txn:
        for n in range(100):
            await txn.set(b"key-%03d" % n, b"value-%d" % n)
        await txn.delete(b"warm")

    assert (mux.batcher.batches - batches, mux.batcher.items - items) == (1, 1)
    stats: dict[str, Any] = await raw.info("commandstats")
    client_commands = {
        name: entry["calls"]
        for name, entry in stats.items()
        if not name.startswith(("cmdstat_config", "cmdstat_info"))
    }
    assert client_commands.get("cmdstat_evalsha") == 1
    # run by the script, not sent: one variadic HSET and ZADD for the 100 puts
    assert client_commands.get("cmdstat_hset") == 1
    assert client_commands.get("cmdstat_zadd") == 1
    # Whatever the script runs inside counts too; nothing else came from the client.
    assert set(client_commands) <= {
        "cmdstat_evalsha",
        "cmdstat_get",
        "cmdstat_type",
        "cmdstat_hset",
        "cmdstat_zadd",
        "cmdstat_hdel",
        "cmdstat_zrem",
        "cmdstat_incr",
    }
    assert await storage.list_keys(ALICE) == [b"key-%03d" % n for n in range(100)]


async def test_reads_and_commits_in_one_batch_keep_read_your_writes_order(
    storage: RedisStorage,
) -> None:
    actors = _actors(16)
    await storage.set(ALICE, b"warm", b"up")

    async def write_then_read(actor: ActorId) -> tuple[bytes | None, list[bytes]]:
        await storage.set(actor, b"a", b"1")
        async with storage.transaction(actor) as txn:
            value = await txn.get(b"a")
            await txn.set(b"b", b"2")
        return value, await storage.list_keys(actor)

    results = await bounded(asyncio.gather(*(write_then_read(a) for a in actors)))
    assert results == [(b"1", [b"a", b"b"])] * len(actors)


# -- honest outcomes --------------------------------------------------------------------


async def test_cut_connection_mid_batch_gives_each_request_its_honest_outcome(
    server: RedisServer, raw: aioredis.Redis
) -> None:
    async with TcpProxy(server.port, seed=3) as proxy:
        store = open_redis(proxy.url())
        try:
            first, landed, lost = _actors(3)
            await store.set(ALICE, b"k", b"v")  # connects and loads the script
            await store.set(first, b"k", b"before")
            mux = _mux(store)
            batches = mux.batcher.batches
            proxy.arm(CutPoint.AFTER_EXEC)  # cut once the first commit's reply arrived

            # The leader goes alone; the rest queue behind it and share one batch:
            # [read, commit (cut after it ran), commit (never sent), read].
            outcomes = await bounded(
                asyncio.gather(
                    store.get(ALICE, b"k"),
                    store.get(first, b"k"),
                    store.set(landed, b"k", b"1"),
                    store.set(lost, b"k", b"1"),
                    store.list_keys(first),
                    return_exceptions=True,
                )
            )

            assert mux.batcher.batches - batches == 2
            assert outcomes[0] == b"v"
            assert outcomes[1] == b"before"  # its reply was read before the cut
            assert isinstance(outcomes[2], CommitOutcomeUnknownError)
            assert isinstance(outcomes[3], CommitOutcomeUnknownError)
            assert isinstance(outcomes[4], StorageUnavailableError)
            assert not isinstance(outcomes[4], CommitOutcomeUnknownError)
            data = actor_keys("kelpie", landed).data
            assert await raw.hget(data, b"k") == b"1"  # unknown, and it did land
            assert await raw.hget(actor_keys("kelpie", lost).data, b"k") is None

            # the next batch reconnects by itself
            assert await bounded(store.get(landed, b"k")) == b"1"
            await bounded(store.set(lost, b"k", b"2"))
            assert await raw.hget(actor_keys("kelpie", lost).data, b"k") == b"2"
        finally:
            await store.close()


async def test_connect_failure_is_unavailable_for_every_request_of_the_batch(
    server: RedisServer,
) -> None:
    async with TcpProxy(server.port) as proxy:
        store = open_redis(proxy.url(), connect_timeout=1.0)
        try:
            await store.set(ALICE, b"k", b"v")
            await proxy.close()  # nothing listens any more; the idle connection is cut
            outcomes = await bounded(
                asyncio.gather(
                    *(store.set(actor, b"k", b"v") for actor in _actors(5)),
                    store.get(ALICE, b"k"),
                    return_exceptions=True,
                )
            )
            for outcome in outcomes:
                assert isinstance(outcome, StorageUnavailableError)
                assert not isinstance(outcome, CommitOutcomeUnknownError)
        finally:
            await store.close()


async def _until_busy(mux: Multiplexer) -> None:
    """Wait (at most about 5 s) until ``mux`` is writing a batch."""
    for _ in range(1000):
        if mux.batcher.busy:
            return
        await asyncio.sleep(0.005)


async def test_cancelled_commit_drops_the_connection_so_replies_stay_in_step(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    await storage.set(ALICE, b"k", b"v")
    mux = _mux(storage)
    await raw.client_pause(10000, all=False)  # WRITE mode: scripts wait, reads do not
    try:
        commit = asyncio.create_task(storage.set(ALICE, b"k", b"paused"))
        await _until_busy(mux)
        await asyncio.sleep(0.05)  # let its bytes reach the server (not an assertion)
        commit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await commit
    finally:
        await raw.client_unpause()
    # Had the connection been kept, this read would get the paused commit's reply.
    assert await bounded(storage.get(ALICE, b"other")) is None
    await bounded(storage.set(ALICE, b"k2", b"v2"))
    assert await bounded(storage.list_keys(ALICE)) == [b"k", b"k2"]


async def test_a_cancelled_leader_does_not_stall_the_requests_queued_behind_it(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    await storage.set(ALICE, b"k", b"v")
    mux = _mux(storage)
    followers: list[asyncio.Task[bytes | None]] = []
    await raw.client_pause(10000, all=False)  # WRITE mode: scripts wait, reads do not
    try:
        leader = asyncio.create_task(storage.set(ALICE, b"k", b"paused"))
        await _until_busy(mux)
        followers = [asyncio.create_task(storage.get(a, b"k")) for a in _actors(5)]
        followers.append(asyncio.create_task(storage.get(ALICE, b"k")))
        await asyncio.sleep(0.05)  # they queue behind the paused commit (not an assertion)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
    finally:
        await raw.client_unpause()
    values = await bounded(asyncio.gather(*followers))
    assert values[:5] == [None] * 5
    assert values[5] in (b"v", b"paused")  # the cancelled commit may or may not have run


# -- group_commit=false and options ------------------------------------------------------


async def test_group_commit_false_sends_each_request_alone(
    server: RedisServer, raw: aioredis.Redis
) -> None:
    store = open_storage(server.url + "?group_commit=false")
    assert isinstance(store, RedisStorage)
    try:
        actors = _actors(16)
        await bounded(asyncio.gather(*(store.set(a, b"n", b"0") for a in actors)))
        transactions = [store.transaction(actor) for actor in actors]
        for txn in transactions:
            assert await txn.get(b"n") == b"0"
            await txn.set(b"n", b"1")
        await raw.incr(actor_keys("kelpie", actors[0]).version)
        outcomes = await bounded(
            asyncio.gather(*(txn.commit() for txn in transactions), return_exceptions=True)
        )
        assert isinstance(outcomes[0], TransactionConflictError)
        assert outcomes[1:] == [None] * 15
        assert store.multiplexer() is None  # no shared connection was ever made
        assert [await store.get(a, b"n") for a in actors] == [b"0"] + [b"1"] * 15
    finally:
        await store.close()


def test_group_commit_options_parse_from_url_and_keywords() -> None:
    store = open_redis("redis://localhost/0?group_commit=false&max_batch=7")
    assert (store.group_commit, store.max_batch) == (False, 7)
    store = open_redis("redis://localhost/0", group_commit="true", max_batch="3")
    assert (store.group_commit, store.max_batch) == (True, 3)
    store = open_redis("unix:///tmp/redis.sock")
    assert (store.group_commit, store.max_batch) == (True, DEFAULT_MAX_BATCH)
    cluster = open_redis_cluster("redis+cluster://127.0.0.1:7000?group_commit=0&max_batch=2")
    assert (cluster.group_commit, cluster.max_batch) == (False, 2)


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost/0?group_commit=maybe",
        "redis://localhost/0?max_batch=0",
        "redis://localhost/0?max_batch=-3",
        "redis://localhost/0?max_batch=many",
        "rediss://localhost/0?max_batch=1.5",
        "unix:///tmp/redis.sock?group_commit=2",
        "redis+cluster://127.0.0.1:7000?max_batch=0",
        "redis+cluster://127.0.0.1:7000?group_commit=yes-please",
    ],
)
def test_bad_group_commit_options_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_storage(url)


def test_bad_group_commit_keywords_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        open_redis("redis://localhost/0", max_batch=0)
    with pytest.raises(ConfigError, match="group_commit"):
        open_redis("redis://localhost/0", group_commit=3)
    with pytest.raises(ConfigError, match="max_batch"):
        open_redis_cluster("redis+cluster://127.0.0.1:7000", max_batch=True)


async def test_batch_stats_count_round_trips_and_requests(redis_server: RedisServer) -> None:
    storage = open_storage(redis_server.url, prefix=f"stats{secrets.token_hex(3)}")
    assert isinstance(storage, RedisStorage)
    async with storage:
        assert storage.batch_stats == (0, 0)
        await storage.set(ActorId("stats", "warm"), b"k", b"v")  # loads the script (NOSCRIPT)
        trips0, requests0 = storage.batch_stats
        actors = [ActorId("stats", f"a{i}") for i in range(16)]
        await asyncio.gather(*(storage.set(a, b"k", b"v") for a in actors))
        trips, requests = storage.batch_stats
        assert requests - requests0 == len(actors)
        assert 1 <= trips - trips0 < len(actors)
