"""``list_actors``/``delete_actor`` on a real redis-server, in both commit modes (ADR 0014).

The cross-backend behaviour is proven by the conformance suite
(``kelpie/testing/conformance/test_actor_lifecycle.py``, over the ``redis``,
``redis-multi`` and ``fakeredis`` built-in backends); these tests cover what
is particular to Redis: what is left in the database after a delete, data
written before the actor index existed, both modes sharing one store, a
foreign key of the wrong type, and a server killed in the middle of a delete.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
import redis.asyncio as aioredis

from kelpie.errors import (
    CommitOutcomeUnknownError,
    CorruptStateError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.redis.actors import decode_members
from kelpie.storage.redis.keys import (
    SLOTS,
    actor_keys,
    actor_member,
    member_actor,
    slot_of_key,
    slot_tag,
)
from kelpie.storage.redis.storage import RedisStorage, open_redis
from kelpie.testing.redis_server import RedisServer
from tests.redis_support import bounded

MODES = ("script", "multi")
HOSTILE = [
    ActorId("bank", "alice"),
    ActorId("bank", "a:b"),
    ActorId("bank:a", "b"),
    ActorId("bank", "{x}"),
    ActorId("bank", "a\x00"),
    ActorId("bank\x00", "a"),
    ActorId("bank", "\u00e9t\u00e9 \U0001f600"),
    ActorId("zz", "%41"),
    ActorId("zz", "A"),
]


def test_index_members_sort_in_actor_id_order_and_decode_back() -> None:
    rng = random.Random(1514)
    print("seed=1514")
    alphabet = "a\x00\x01\x7f:{}%\u00e9\uffff\U0001f600"
    actors = {
        ActorId(
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))),
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))),
        )
        for _ in range(5000)
    } | set(HOSTILE)
    ordered = sorted(actors)
    assert sorted(actors, key=actor_member) == ordered
    assert [member_actor(actor_member(actor)) for actor in ordered] == ordered
    # A page decodes in bulk (plain pages) or member by member (escaped NULs): the same ids.
    members = [actor_member(actor) for actor in ordered]
    for start in range(0, len(members), 97):
        page = decode_members(_STORE, members[start : start + 97])
        assert page == ordered[start : start + 97]
        assert [hash(a) for a in page] == [hash(a) for a in ordered[start : start + 97]]
        assert [a.encode() for a in page] == [a.encode() for a in ordered[start : start + 97]]
    plain = sorted(ActorId(f"ns{n % 3}", f"id-{n}") for n in range(300))
    assert decode_members(_STORE, [actor_member(actor) for actor in plain]) == plain


class _Where:
    prefix = "p"
    where = "redis://127.0.0.1"


_STORE = cast(RedisStorage, _Where())


@pytest.mark.parametrize(
    "damaged",
    [
        b"ns\x00\x01id",  # no end
        b"ns\x00\x01\x00\x01",  # empty id
        b"ns\x00\x01id\x00\x01x",  # past the end
        b"ns\x00\x01\xff\x00\x01",  # not UTF-8
        b"ns\x00\x01" + b"a" * 129 + b"\x00\x01",  # a part too long
        b"\x00\x01id\x00\x01",  # empty namespace
    ],
)
def test_an_index_member_kelpie_did_not_write_is_corrupt_state_naming_it(damaged: bytes) -> None:
    good = [actor_member(ActorId("ns", "a")), actor_member(ActorId("ns", "b"))]
    with pytest.raises(CorruptStateError, match="did not write"):
        decode_members(_STORE, sorted([*good, damaged]))


def test_every_slot_has_a_tag_of_its_own_that_no_actor_shares() -> None:
    tags = [slot_tag(slot) for slot in range(SLOTS)]
    assert [slot_of_key(b"p:{" + tag + b"}:a") for tag in tags] == list(range(SLOTS))
    assert all(b":" not in tag for tag in tags)  # an actor's tag always has one
    keys = actor_keys("p", ActorId("bank", "alice"), True)
    assert slot_of_key(keys.actors) == slot_of_key(keys.deletes) == slot_of_key(keys.version)


@pytest.fixture(params=MODES)
async def store(request: pytest.FixtureRequest, server: RedisServer) -> AsyncIterator[RedisStorage]:
    storage = open_redis(server.url, prefix="lc", commit=request.param)
    yield storage
    await storage.close()


async def _keys(raw: aioredis.Redis) -> set[bytes]:
    return {bytes(key) async for key in raw.scan_iter(count=1000)}


async def test_lists_hostile_ids_in_actor_id_order_and_deletes_every_key(
    store: RedisStorage, raw: aioredis.Redis
) -> None:
    for actor in reversed(HOSTILE):
        async with store.transaction(actor) as txn:
            await txn.set(b"state", actor.id.encode())
            await txn.set(b"kv:1", b"x")
    assert await bounded(store.list_actors()) == sorted(HOSTILE)
    assert await store.list_actors("bank") == sorted(a for a in HOSTILE if a.namespace == "bank")
    assert await store.list_actors(after=ActorId("bank", "a:b"), limit=2) == sorted(HOSTILE)[2:4]

    for actor in HOSTILE:
        await bounded(store.delete_actor(actor))
        assert actor not in await store.list_actors()
    assert await store.list_actors() == []
    # Nothing of any actor is left: only the store's index marker and delete counter.
    assert await _keys(raw) == {b"lc:{#}:f", b"lc:{#}:s"}
    assert await raw.get(b"lc:{#}:s") == b"1"  # each actor had version 1 (one commit)


@pytest.mark.parametrize("mode", MODES)
async def test_a_recreated_actor_never_repeats_a_version_of_the_deleted_one(
    server: RedisServer, raw: aioredis.Redis, mode: str
) -> None:
    writer = open_redis(server.url, prefix="lc", commit=mode)
    actor = ActorId("bank", "alice")
    for n in range(3):
        await writer.set(actor, b"n", b"%d" % n)
    keys = actor_keys("lc", actor)
    assert await raw.get(keys.version) == b"3"
    await writer.delete_actor(actor)
    await writer.delete(actor, b"gone")  # a write-only commit re-creates the version key
    assert await raw.get(keys.version) == b"4"  # above every version the deleted actor had
    await writer.close()


async def test_both_modes_fence_each_other_across_a_delete(server: RedisServer) -> None:
    script = open_redis(server.url, prefix="mix")
    multi = open_redis(server.url, prefix="mix", commit="multi")
    actor = ActorId("bank", "bob")
    try:
        for reader, writer in ((script, multi), (multi, script)):
            await writer.set(actor, b"n", b"1")
            txn = reader.transaction(actor)
            assert await txn.get(b"n") == b"1"
            await writer.delete_actor(actor)
            await writer.set(actor, b"n", b"1")  # the same number of commits as before
            await txn.set(b"n", b"2")
            with pytest.raises(TransactionConflictError):
                await bounded(txn.commit())
            await reader.delete_actor(actor)
            absent = reader.transaction(actor)  # read as absent, then created and deleted
            assert await absent.get(b"n") is None
            await writer.set(actor, b"n", b"3")
            await writer.delete_actor(actor)
            with pytest.raises(TransactionConflictError):
                await bounded(absent.commit())
        assert await script.list_actors() == []
    finally:
        await script.close()
        await multi.close()


@pytest.mark.parametrize("mode", MODES)
async def test_an_actor_emptied_by_commits_leaves_the_index(
    server: RedisServer, raw: aioredis.Redis, mode: str
) -> None:
    store = open_redis(server.url, prefix="lc", commit=mode)
    actor, other = ActorId("ns", "a"), ActorId("ns", "b")
    await store.set(actor, b"k1", b"1")
    await store.set(actor, b"k2", b"2")
    await store.set(other, b"k", b"1")
    await store.delete(actor, b"k1")
    assert await store.list_actors() == [actor, other]
    txn = store.transaction(actor)  # a read-write transaction that deletes the last key
    assert await txn.get(b"k2") == b"2"
    await txn.delete(b"k2")
    await txn.delete(b"never-there")
    await bounded(txn.commit())
    assert await store.list_actors() == [other]
    await store.delete(other, b"k")  # write-only
    assert await store.list_actors() == []
    assert await raw.exists(b"lc:{#}:a") == 0
    await store.close()


@pytest.mark.parametrize("mode", MODES)
async def test_data_written_before_the_index_existed_is_listed_and_deleted(
    server: RedisServer, raw: aioredis.Redis, mode: str
) -> None:
    rng = random.Random(15)
    print("seed=15")
    old = sorted(
        {ActorId(f"ns{rng.randrange(3)}", f"id-{rng.randrange(10**6)}") for _ in range(2500)}
    )
    old += [actor for actor in HOSTILE if actor not in old]
    old.sort()
    # The previous release's layout: v, d and k per actor, no index, no marker.
    async with raw.pipeline(transaction=False) as pipe:
        for actor in old:
            keys = actor_keys("old", actor)
            pipe.set(keys.version, b"7")
            pipe.hset(keys.data, b"state", b"x")
            pipe.zadd(keys.index, {b"state": 0})
        emptied = actor_keys("old", ActorId("ns0", "emptied"))
        pipe.set(emptied.version, b"3")  # all its keys were deleted: not listed
        pipe.hset(b"other:{ns0:x}:d", b"k", b"v")  # another prefix: never listed
        await pipe.execute()

    store = open_redis(server.url, prefix="old", commit=mode)
    listed: list[ActorId] = []
    after = None
    while page := await bounded(store.list_actors(after=after, limit=700)):
        listed += page
        after = page[-1]
    assert listed == old
    assert await raw.get(b"old:{#}:f") == b"1"

    victim = old[100]
    txn = store.transaction(victim)
    assert await txn.get(b"state") == b"x"
    await store.delete_actor(victim)
    gone = actor_keys("old", victim)
    assert not await raw.exists(gone.version, gone.data, gone.index)
    assert await raw.get(b"old:{#}:s") == b"7"
    await txn.set(b"state", b"y")
    with pytest.raises(TransactionConflictError):
        await txn.commit()
    assert victim not in await store.list_actors(old[0].namespace, limit=100_000)
    await store.close()

    again = open_redis(server.url, prefix="old", commit=mode)  # the marker: no second scan
    assert await again.list_actors(limit=100_000) == [a for a in old if a != victim]
    await again.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_foreign_key_of_the_wrong_type_is_corrupt_state_and_nothing_is_deleted(
    server: RedisServer, raw: aioredis.Redis, mode: str
) -> None:
    store = open_redis(server.url, prefix="wt", commit=mode)
    actor = ActorId("ns", "a")
    await store.set(actor, b"k", b"v")
    await store.list_actors()
    await raw.set(b"wt:{#}:s", b"not a number")
    with pytest.raises(CorruptStateError):
        await bounded(store.delete_actor(actor))
    assert await store.get(actor, b"k") == b"v"
    assert await store.list_actors() == [actor]
    await store.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_server_killed_mid_delete_never_leaves_half_an_actor(
    tmp_path: Path, mode: str
) -> None:
    with RedisServer(tmp_path / "kill", appendonly=True, appendfsync="always") as srv:
        store = open_redis(srv.url, prefix="k", socket_timeout=5.0, commit=mode)
        actor = ActorId("bank", "wide")
        keys = 20_000
        outcomes: dict[str, int] = {}
        for trial, delay in enumerate((0.0, 0.002, 0.005, 0.02)):
            writes = [(b"k%06d" % n, b"v" * 20) for n in range(keys)]
            for start in range(0, keys, 2000):
                async with store.transaction(actor) as txn:
                    for key, value in writes[start : start + 2000]:
                        await txn.set(key, value)
            task = asyncio.create_task(store.delete_actor(actor))
            await asyncio.sleep(delay)
            srv.kill()
            try:
                await bounded(task)
                outcome = "deleted"
            except (CommitOutcomeUnknownError, StorageUnavailableError) as exc:
                outcome = type(exc).__name__
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            srv.start()
            left = await bounded(store.list_keys(actor))
            listed = await store.list_actors()
            print(f"trial {trial}: delay {delay}: {outcome}, {len(left)} keys left")
            assert len(left) in (0, keys), "a half-deleted actor"
            assert listed == ([actor] if left else [])
            if outcome == "deleted":
                assert not left
            await store.delete_actor(actor)
        print(outcomes)
        await store.close()
