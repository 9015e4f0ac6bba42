"""``kelpie.storage.copying``: copy_store and verify_stores called from Python."""

from __future__ import annotations

import random
from itertools import pairwise
from pathlib import Path

import pytest

from kelpie import ActorId, DestinationNotEmptyError, Storage, open_storage
from kelpie.storage.copying import CONCURRENCY, copy_store, read_actor, verify_stores
from kelpie.storage.lifecycle import iter_actors

ALPHABET = "a/\x00\x01:{}%\u00e9\uffff\U0001f600 "


def _hostile(seed: int, count: int) -> dict[ActorId, dict[bytes, bytes]]:
    rng = random.Random(seed)
    print(f"seed={seed}")
    actors: dict[ActorId, dict[bytes, bytes]] = {}
    while len(actors) < count:
        actor = ActorId(
            "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 3))),
            "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 6))),
        )
        actors[actor] = {
            bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))): rng.randbytes(
                rng.randint(0, 64)
            )
            for _ in range(rng.randint(1, 4))
        }
    return actors


async def _fill(storage: Storage, actors: dict[ActorId, dict[bytes, bytes]]) -> None:
    for actor, records in actors.items():
        async with storage.transaction(actor) as txn:
            for key, value in records.items():
                await txn.set(key, value)


async def _contents(storage: Storage) -> dict[ActorId, dict[bytes, bytes]]:
    return {actor: dict(await read_actor(storage, actor)) async for actor in iter_actors(storage)}


async def test_a_chain_of_copies_across_backends_ends_byte_identical(tmp_path: Path) -> None:
    actors = _hostile(1601, 300)
    hops = [
        open_storage("memory://copying-chain"),
        open_storage(f"lmdb://{tmp_path / 'lmdb'}"),
        open_storage(f"sqlite://{tmp_path / 'copy.db'}"),
        open_storage(f"lmdb://{tmp_path / 'lmdb-2'}"),
    ]
    try:
        await _fill(hops[0], actors)
        for source, destination in pairwise(hops):
            report = await copy_store(source, destination)
            assert (report.copied, report.vanished, report.resumed_after) == (300, 0, None)
            assert report.ok and report.verification is not None
            assert report.verification.identical == 300
        assert await _contents(hops[-1]) == actors
        both_ways = await verify_stores(hops[0], hops[-1])
        assert both_ways.ok and both_ways.identical == 300
    finally:
        for storage in hops:
            await storage.close()


async def test_a_non_empty_destination_is_refused_and_nothing_is_copied() -> None:
    async with open_storage("memory://") as source, open_storage("memory://") as destination:
        await _fill(source, _hostile(1602, 20))
        await destination.set(ActorId("theirs", "x"), b"k", b"v")
        with pytest.raises(DestinationNotEmptyError):
            await copy_store(source, destination)
        assert [a async for a in iter_actors(destination)] == [ActorId("theirs", "x")]
        with pytest.raises(ValueError, match="same storage"):
            await copy_store(source, source)


async def test_merge_replaces_actors_of_the_same_id_and_keeps_the_others() -> None:
    actors = _hostile(1603, 30)
    shared = next(iter(actors))
    async with open_storage("memory://") as source, open_storage("memory://") as destination:
        await _fill(source, actors)
        await destination.set(shared, b"only-in-destination", b"stale")
        await destination.set(ActorId("theirs", "x"), b"k", b"v")
        report = await copy_store(source, destination, merge=True)
        assert report.ok and report.copied == 30
        assert dict(await read_actor(destination, shared)) == actors[shared]
        assert await destination.get(ActorId("theirs", "x"), b"k") == b"v"
        found = await verify_stores(source, destination)
        assert found.extra == [ActorId("theirs", "x")] and not found.ok


class _Interrupted(Exception):
    pass


async def test_an_interrupted_copy_resumes_from_the_destination_and_ends_identical() -> None:
    actors = _hostile(1604, 200)
    async with open_storage("memory://") as source, open_storage("memory://") as destination:
        await _fill(source, actors)
        done = 0

        def stop_midway() -> None:
            nonlocal done
            done += 1
            if done == 120:
                raise _Interrupted

        with pytest.raises(_Interrupted):
            await copy_store(source, destination, on_actor=stop_midway)
        partial = len([a async for a in iter_actors(destination)])
        assert CONCURRENCY <= partial < 200
        report = await copy_store(source, destination, resume=True)
        assert report.resumed_after is not None and report.ok
        assert report.copied < 200 - partial + 2 * CONCURRENCY  # did not start over
        assert await _contents(destination) == actors


async def test_verify_names_every_kind_of_difference() -> None:
    actors = _hostile(1605, 10)
    names = sorted(actors)
    async with open_storage("memory://") as source, open_storage("memory://") as destination:
        await _fill(source, actors)
        await copy_store(source, destination)
        await destination.set(names[0], b"planted", b"!")
        await destination.delete_actor(names[1])
        await destination.set(ActorId("extra", "x"), b"k", b"v")
        found = await verify_stores(source, destination)
        assert (found.different, found.missing, found.extra) == (
            [names[0]],
            [names[1]],
            [ActorId("extra", "x")],
        )
        assert found.identical == 8 and not found.ok
        one_way = await verify_stores(source, destination, sources_only=True)
        assert one_way.extra == [] and one_way.compared == 10
