"""``kelpie.storage.copying``: copy_store and verify_stores called from Python."""

from __future__ import annotations

import collections
import random
from itertools import pairwise
from pathlib import Path

import pytest

from kelpie import ActorId, DestinationNotEmptyError, Storage, open_storage
from kelpie.errors import CommitOutcomeUnknownError, StorageUnavailableError
from kelpie.storage.copying import (
    CONCURRENCY,
    TRANSIENT_ATTEMPTS,
    copy_store,
    read_actor,
    verify_stores,
)
from kelpie.storage.lifecycle import iter_actors
from kelpie.storage.protocol import Transaction
from kelpie.storage.wrapper import StorageWrapper, TransactionWrapper

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


class _Flaky(StorageWrapper):
    """A store that is unavailable now and then: every ``every``-th listing page and
    transaction fails before it reaches the store, and every ``every``-th commit fails
    after it was applied (the caller cannot tell: ``CommitOutcomeUnknownError``)."""

    def __init__(self, inner: Storage, every: int, per_call_site: int | None = 2) -> None:
        super().__init__(inner)
        self.every = every
        self.per_call_site = per_call_site
        """At most this many failures for one actor's transaction or one page (None:
        no limit): the retries of one call never run out by bad luck."""
        self.calls = 0
        self.failures = 0
        self._failed: collections.Counter[object] = collections.Counter()

    def _fails(self, site: object) -> bool:
        self.calls += 1
        limit = self.per_call_site
        if self.calls % self.every or (limit is not None and self._failed[site] >= limit):
            return False
        self._failed[site] += 1
        self.failures += 1
        return True

    async def list_actors(
        self, namespace: str | None = None, *, after: ActorId | None = None, limit: int = 1000
    ) -> list[ActorId]:
        if self._fails(("page", namespace, after)):
            raise StorageUnavailableError("injected: connection dropped while listing")
        return await super().list_actors(namespace, after=after, limit=limit)

    def transaction(self, actor: ActorId) -> Transaction:
        return _FlakyTransaction(self, actor, self.inner.transaction(actor))


class _FlakyTransaction(TransactionWrapper):
    def __init__(self, storage: _Flaky, actor: ActorId, inner: Transaction) -> None:
        super().__init__(inner)
        self.storage = storage
        self.actor = actor

    async def list_keys(self, prefix: bytes = b"") -> list[bytes]:
        if self.storage._fails(("read", self.actor)):
            raise StorageUnavailableError("injected: timeout reading")
        return await super().list_keys(prefix)

    async def commit(self) -> None:
        await super().commit()
        if self.storage._fails(("commit", self.actor)):
            raise CommitOutcomeUnknownError("injected: applied, reply lost")


async def test_a_copy_rides_out_a_store_unavailable_now_and_then() -> None:
    actors = _hostile(7, 100)
    source, destination = open_storage("memory://"), open_storage("memory://")
    await _fill(source, actors)
    flaky_source, flaky_destination = _Flaky(source, every=6), _Flaky(destination, every=6)
    report = await copy_store(flaky_source, flaky_destination)
    print(f"failures injected: source {flaky_source.failures}, dest {flaky_destination.failures}")
    assert flaky_source.failures > 10 and flaky_destination.failures > 10
    assert report.copied == len(actors) and report.ok
    assert await _contents(destination) == actors


async def test_a_store_that_stays_down_stops_the_copy_with_its_error() -> None:
    source, destination = open_storage("memory://"), open_storage("memory://")
    await _fill(source, _hostile(8, 5))
    down = _Flaky(source, every=1, per_call_site=None)  # every call fails
    with pytest.raises(StorageUnavailableError, match="injected"):
        await copy_store(down, destination)
    assert down.failures == TRANSIENT_ATTEMPTS  # the listing, tried that often
    assert await _contents(destination) == {}
