"""``list_actors``/``delete_actor`` on a real 3+3 Redis Cluster (ADR 0014).

Each hash slot keeps its own actor index and delete counter, so a commit
touches one slot; listing merges the slots of every master. The
cross-backend behaviour runs in ``test_conformance_on_cluster.py`` (the whole
conformance suite, the lifecycle tests included); these tests cover what is
particular to the cluster.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster as RawCluster

from kelpie import ActorId, open_storage
from kelpie.errors import TransactionConflictError
from kelpie.storage.redis.cluster import RedisClusterStorage
from kelpie.storage.redis.keys import actor_keys, slot_of_key
from kelpie.storage.redis.scratch import drop_prefix, scratch_url
from kelpie.testing.redis_cluster import RedisCluster

HOSTILE = ["a:b", "{x}", "a\x00", "\u00e9t\u00e9 \U0001f600", "%41", "A", "}{", " "]


@pytest.fixture
async def storage(redis_cluster: RedisCluster, prefix: str) -> AsyncIterator[RedisClusterStorage]:
    store = open_storage(f"{redis_cluster.url}?prefix={prefix}")
    assert isinstance(store, RedisClusterStorage)
    yield store
    await store.close()


@pytest.fixture
async def raw(redis_cluster: RedisCluster) -> AsyncIterator[RawCluster]:
    host, port = redis_cluster.url.removeprefix("redis+cluster://").split(",")[0].split(":")
    client = RawCluster(host=host, port=int(port))
    await client.initialize()
    yield client
    await client.aclose()


def _actors(seed: int, count: int) -> list[ActorId]:
    rng = random.Random(seed)
    print(f"seed={seed}")
    found = {ActorId(f"ns{rng.randrange(3)}", f"{rng.choice(HOSTILE)}-{n}") for n in range(count)}
    found |= {ActorId(f"ns:{{{n}}}", ident) for n, ident in enumerate(HOSTILE)}
    return sorted(found)


async def test_lists_the_actors_of_every_master_in_actor_id_order(
    storage: RedisClusterStorage,
) -> None:
    actors = _actors(1501, 600)
    for actor in reversed(actors):
        await storage.set(actor, b"k", b"v")
    masters = {storage.master_of(actor) for actor in actors}
    assert len(masters) == 3, masters  # the actors live on every master

    assert await storage.list_actors(limit=100_000) == actors
    paged: list[ActorId] = []
    after = None
    while page := await storage.list_actors(after=after, limit=37):
        paged += page
        after = page[-1]
    assert paged == actors
    assert await storage.list_actors("ns1", limit=100_000) == [
        actor for actor in actors if actor.namespace == "ns1"
    ]
    middle = actors[len(actors) // 2]
    assert await storage.list_actors(after=middle, limit=5) == actors[len(actors) // 2 + 1 :][:5]


async def test_a_page_after_a_delete_by_this_storage_does_not_list_the_deleted_actor(
    storage: RedisClusterStorage,
) -> None:
    actors = [ActorId("page", f"a{n:03d}") for n in range(60)]
    for actor in actors:
        await storage.set(actor, b"k", b"v")
    first = await storage.list_actors("page", limit=20)
    assert first == actors[:20]
    await storage.delete_actor(actors[30])
    rest = await storage.list_actors("page", after=first[-1], limit=100)
    assert rest == actors[20:30] + actors[31:]


async def test_delete_leaves_no_key_of_the_actor_and_a_recreated_actor_conflicts(
    storage: RedisClusterStorage, raw: RawCluster, prefix: str
) -> None:
    actor = ActorId("bank", "{alice}:x")
    keys = actor_keys(prefix, actor, True)
    assert slot_of_key(keys.actors) == slot_of_key(keys.version) == storage.slot_of(actor)
    for n in range(3):
        await storage.set(actor, b"n", b"%d" % n)
    reader = storage.transaction(actor)
    assert await reader.get(b"n") == b"2"
    read_only = storage.transaction(actor)
    assert await read_only.get(b"n") == b"2"

    await storage.delete_actor(actor)
    assert await raw.exists(keys.version, keys.data, keys.index, keys.actors) == 0
    assert await raw.get(keys.deletes) == b"3"  # the slot's delete counter, not the actor's
    for n in range(3):  # as many commits as before
        await storage.set(actor, b"n", b"%d" % n)
    version = await raw.get(keys.version)
    assert isinstance(version, bytes) and int(version) > 3
    await reader.set(b"n", b"stale")
    with pytest.raises(TransactionConflictError):
        await reader.commit()
    with pytest.raises(TransactionConflictError):
        await read_only.commit()

    absent = storage.transaction(ActorId("bank", "nobody"))
    assert await absent.get(b"n") is None
    await storage.set(ActorId("bank", "nobody"), b"n", b"1")
    await storage.delete_actor(ActorId("bank", "nobody"))
    await absent.set(b"n", b"x")
    with pytest.raises(TransactionConflictError):
        await absent.commit()
    assert await storage.get(actor, b"n") == b"2"


async def test_data_written_before_the_index_existed_is_listed_from_every_master(
    redis_cluster: RedisCluster, raw: RawCluster, prefix: str
) -> None:
    actors = _actors(1502, 400)
    for actor in actors:  # the previous release's layout: v, d and k, no index
        keys = actor_keys(prefix, actor)
        await raw.set(keys.version, b"5")
        await raw.hset(keys.data, b"state", b"x")
        await raw.zadd(keys.index, {b"state": 0})
    store = open_storage(f"{redis_cluster.url}?prefix={prefix}")
    assert isinstance(store, RedisClusterStorage)
    try:
        assert await store.list_actors(limit=100_000) == actors
        await store.delete_actor(actors[7])
        assert await store.list_actors(limit=100_000) == actors[:7] + actors[8:]
    finally:
        await store.close()
    again = open_storage(f"{redis_cluster.url}?prefix={prefix}")
    try:
        assert await again.list_actors(after=actors[6], limit=2) == [actors[8], actors[9]]
    finally:
        await again.close()


async def test_a_scratch_prefix_is_removed_from_every_master_and_nothing_else(
    redis_cluster: RedisCluster, raw: RawCluster
) -> None:
    """What ``kelpie conformance`` does on a cluster: write under a private prefix
    (``scratch_url``), delete the actors, then drop the prefix on every master."""
    mine = "scratch-test"
    await raw.set(f"{mine}:kept", b"the user's")
    url = scratch_url(f"{redis_cluster.url}?prefix={mine}", "conformance")
    assert f"prefix={mine}%3Aconformance-" in url
    store = open_storage(url)
    assert isinstance(store, RedisClusterStorage)
    actors = _actors(1502, 200)
    try:
        for actor in actors:
            await store.set(actor, b"k", b"v")
        for actor in actors[:100]:
            await store.delete_actor(actor)  # leaves per-slot delete counters behind
        assert len({store.master_of(actor) for actor in actors}) == 3
    finally:
        await store.close()
    removed = await drop_prefix(url)
    assert removed > 100  # the 100 remaining actors' keys, indexes and counters
    left = [key async for key in raw.scan_iter(match=f"{mine}:*", count=1000)]
    assert left == [f"{mine}:kept".encode()]
    assert await drop_prefix(url) == 0
