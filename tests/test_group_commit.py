"""Group commit: the shared ``Batcher`` and its use by the memory and LMDB backends.

Redis has its own tests (tests/test_redis_group_commit.py); the conformance
suite runs every backend with group commit on (the default).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    StorageFullError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.group_commit import Batcher
from kelpie.storage.lmdb.storage import LMDBStorage
from kelpie.storage.memory import MemoryStorage
from kelpie.storage.protocol import Storage
from kelpie.storage.registry import open_storage

ACTORS = [ActorId("gc", f"a{i}") for i in range(32)]


# -- the Batcher ---------------------------------------------------------------


class _Recorder:
    """A write function that records its batches and holds each until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()

    async def write(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.gate.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_an_idle_batcher_writes_a_request_at_once_in_the_callers_task() -> None:
    recorder = _Recorder()
    recorder.gate.set()
    batcher: Batcher[int, int] = Batcher(recorder.write, in_flight_error=RuntimeError)
    assert await batcher.submit(4) == 40
    assert recorder.batches == [[4]]
    assert (batcher.batches, batcher.items, batcher.busy) == (1, 1, False)


async def test_requests_arriving_during_a_write_go_together_in_the_next_batch() -> None:
    recorder = _Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.write, in_flight_error=RuntimeError)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3, 4, 6)]
    await asyncio.sleep(0)
    assert recorder.batches == [[0]] and batcher.busy
    recorder.gate.set()
    assert await first == 0
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert recorder.batches == [[0], [2, 3, 4, 6]]
    assert outcomes[0] == 20 and outcomes[2] == 40 and outcomes[3] == 60
    assert isinstance(outcomes[1], ValueError)  # one item's failure is its own
    assert (batcher.batches, batcher.items, batcher.busy) == (2, 5, False)


async def test_max_batch_splits_a_long_queue() -> None:
    recorder = _Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.write, max_batch=3, in_flight_error=RuntimeError)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batcher.submit(2 * i)) for i in range(1, 8)]
    await asyncio.sleep(0)
    recorder.gate.set()
    await asyncio.gather(first, *rest)
    assert [len(b) for b in recorder.batches] == [1, 3, 3, 1]


async def test_a_write_that_raises_fails_every_item_of_its_batch_only() -> None:
    calls: list[list[int]] = []

    gate = asyncio.Event()

    async def write(items: Sequence[int]) -> list[int | BaseException]:
        calls.append(list(items))
        await gate.wait()
        if 99 in items:
            raise StorageUnavailableError("the server went away")
        return list(items)

    batcher: Batcher[int, int] = Batcher(write, max_batch=2, in_flight_error=RuntimeError)
    lead = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0)
    queued = [asyncio.ensure_future(batcher.submit(i)) for i in (99, 2, 3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(lead, *queued, return_exceptions=True)
    assert calls == [[1], [99, 2], [3]]
    assert results[0] == 1 and results[3] == 3
    assert all(isinstance(r, StorageUnavailableError) for r in results[1:3])


async def test_a_cancelled_drain_fails_the_batch_in_flight_and_the_queue() -> None:
    recorder = _Recorder()
    batcher: Batcher[int, int] = Batcher(
        recorder.write,
        max_batch=2,
        in_flight_error=lambda: CommitOutcomeUnknownError("cancelled mid-batch"),
    )
    lead = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0)
    queued = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 4, 6)]
    await asyncio.sleep(0)
    lead.cancel()  # the leader's own write is cancelled: the queue still drains
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert recorder.batches == [[0], [2, 4]] and batcher.in_flight == 2
    drainer = batcher._drainer
    assert drainer is not None
    drainer.cancel()  # the process dies while the batch [2, 4] is being written
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert [type(r) for r in results] == [
        CommitOutcomeUnknownError,
        CommitOutcomeUnknownError,
        StorageUnavailableError,
    ]
    assert not batcher.busy and batcher.in_flight == 0


# -- memory and LMDB -------------------------------------------------------------


@pytest.fixture(params=["memory", "lmdb"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # memory:// batches only commits that arrive while a batch waits its commit_latency.
    return (
        "memory://?commit_latency=0.001" if request.param == "memory" else f"lmdb://{tmp_path}/db"
    )


def _stats(storage: Storage) -> tuple[int, int]:
    assert isinstance(storage, MemoryStorage | LMDBStorage)
    return storage.batch_stats


async def _increment(storage: Storage, actor: ActorId) -> None:
    async with storage.transaction(actor) as txn:
        value = int(await txn.get(b"n") or b"0")
        await txn.set(b"n", b"%d" % (value + 1))
        await txn.set(b"who", actor.id.encode())


async def test_concurrent_commits_of_many_actors_share_batches(url: str) -> None:
    async with open_storage(url) as storage:
        for _ in range(3):
            await asyncio.gather(*(_increment(storage, a) for a in ACTORS))
        batches, items = _stats(storage)
        print(f"{url}: {items} commits in {batches} batches")
        assert items == 3 * len(ACTORS)
        assert batches < items  # some commits shared a batch
        for actor in ACTORS:
            assert await storage.get(actor, b"n") == b"3"
            assert await storage.get(actor, b"who") == actor.id.encode()


async def test_a_conflict_in_a_batch_fails_only_its_own_commit(url: str) -> None:
    async with open_storage(url) as storage:
        await asyncio.gather(*(_increment(storage, a) for a in ACTORS[:8]))
        victim = ACTORS[3]
        stale = storage.transaction(victim)
        await stale.get(b"n")
        await storage.set(victim, b"n", b"100")  # lands after the stale read
        await stale.set(b"n", b"2")
        others = [_increment(storage, a) for a in ACTORS[:8] if a != victim]
        results = await asyncio.gather(stale.commit(), *others, return_exceptions=True)
        assert isinstance(results[0], TransactionConflictError)
        assert all(r is None for r in results[1:])
        assert await storage.get(victim, b"n") == b"100"
        for actor in ACTORS[:8]:
            if actor != victim:
                assert await storage.get(actor, b"n") == b"2"


async def test_two_commits_of_one_actor_in_one_batch_are_serialised(url: str) -> None:
    async with open_storage(url) as storage:
        first, second = storage.transaction(ACTORS[0]), storage.transaction(ACTORS[0])
        assert await first.get(b"n") is None and await second.get(b"n") is None
        await first.set(b"n", b"1")
        await second.set(b"n", b"2")
        blocker = _increment(storage, ACTORS[1])  # keeps the batcher busy: both queue
        results = await asyncio.gather(
            blocker, first.commit(), second.commit(), return_exceptions=True
        )
        assert results[1] is None and isinstance(results[2], TransactionConflictError)
        assert await storage.get(ACTORS[0], b"n") == b"1"


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_max_batch_is_a_config_error(url: str, value: str) -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        open_storage(url, max_batch=value)


async def test_group_commit_can_be_turned_off(url: str) -> None:
    async with open_storage(url, group_commit=False) as storage:
        await asyncio.gather(*(_increment(storage, a) for a in ACTORS))
        assert _stats(storage) == (0, 0)
        assert [await storage.get(a, b"n") for a in ACTORS] == [b"1"] * len(ACTORS)


# -- LMDB specifics ----------------------------------------------------------------


async def test_lmdb_batch_grows_the_map_and_keeps_every_commit(tmp_path: Path) -> None:
    big = b"x" * 200_000
    async with open_storage(f"lmdb://{tmp_path}/db", map_size=256 * 1024) as storage:
        assert isinstance(storage, LMDBStorage)

        async def write(actor: ActorId) -> None:
            async with storage.transaction(actor) as txn:
                await txn.get(b"v")
                await txn.set(b"v", big)

        await asyncio.gather(*(write(a) for a in ACTORS[:16]))
        assert storage.map_size() > 256 * 1024
        assert storage.batch_stats[0] < 16
        assert [await storage.get(a, b"v") for a in ACTORS[:16]] == [big] * 16


async def test_lmdb_full_map_fails_only_the_commit_that_cannot_fit(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path}/db"
    async with open_storage(url, map_size=1024 * 1024, max_map_size=1024 * 1024) as storage:
        small = [storage.set(a, b"k", b"small") for a in ACTORS[:10]]
        huge = storage.set(ActorId("gc", "huge"), b"k", b"h" * (4 * 1024 * 1024))
        lead = asyncio.ensure_future(storage.set(ActorId("gc", "lead"), b"k", b"1"))
        await asyncio.sleep(0)
        results = await asyncio.gather(*small, huge, return_exceptions=True)
        await lead
        assert all(r is None for r in results[:10])
        assert isinstance(results[10], StorageFullError)
        assert await storage.get(ActorId("gc", "huge"), b"k") is None
        assert [await storage.get(a, b"k") for a in ACTORS[:10]] == [b"small"] * 10


async def test_lmdb_batched_commits_survive_reopening(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path}/db"
    async with open_storage(url) as storage:
        await asyncio.gather(*(_increment(storage, a) for a in ACTORS))
    async with open_storage(url) as storage:
        assert [await storage.get(a, b"n") for a in ACTORS] == [b"1"] * len(ACTORS)


async def test_lmdb_group_commit_is_per_storage_on_one_environment(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path}/db"
    async with open_storage(url) as on, open_storage(url, group_commit=False) as off:
        assert isinstance(on, LMDBStorage) and isinstance(off, LMDBStorage)
        assert on.options.group_commit and not off.options.group_commit
        await asyncio.gather(*(_increment(on, a) for a in ACTORS))
        await asyncio.gather(*(_increment(off, a) for a in ACTORS))
        assert off.batch_stats == (0, 0) and on.batch_stats[1] == len(ACTORS)
        assert [await on.get(a, b"n") for a in ACTORS] == [b"2"] * len(ACTORS)
    with pytest.raises(ConfigError, match="other options"):
        async with open_storage(url) as first, open_storage(url, sync=False):
            await first.get(ACTORS[0], b"n")


async def test_a_drain_cancelled_before_it_runs_fails_the_queue_and_frees_the_batcher() -> None:
    recorder = _Recorder()
    recorder.gate.set()
    batcher: Batcher[int, int] = Batcher(recorder.write, in_flight_error=RuntimeError)
    queued: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    batcher._queue.append((2, queued))
    batcher._start_drain()  # what a leader does when it finds work queued...
    drainer = batcher._drainer
    assert drainer is not None
    drainer.cancel()  # ...but its process dies before the drain task ever runs
    with pytest.raises(StorageUnavailableError):
        await queued
    await asyncio.sleep(0)
    assert not batcher.busy and recorder.batches == []
    assert await batcher.submit(4) == 40  # usable again, not stuck "busy"


async def test_a_shared_batcher_drains_in_a_context_of_its_own() -> None:
    import contextvars

    owner: contextvars.ContextVar[str] = contextvars.ContextVar("owner", default="nobody")
    seen: list[str] = []
    gate = asyncio.Event()

    async def write(items: Sequence[int]) -> list[int | BaseException]:
        seen.append(owner.get())
        await gate.wait()
        return list(items)

    for shared, expected in ((False, "caller"), (True, "nobody")):
        seen.clear()
        gate.clear()
        batcher: Batcher[int, int] = Batcher(write, in_flight_error=RuntimeError, shared=shared)
        owner.set("caller")
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(batcher.submit(2))  # queues behind the lead
        await asyncio.sleep(0)
        gate.set()
        assert list(await asyncio.gather(first, second)) == [1, 2]
        assert seen == ["caller", expected]  # the lead writes in its own task, then the drain
