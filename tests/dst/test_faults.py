"""Each fault does what the catalogue says, over the memory backend."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

from kelpie.dst.faults import FaultInjector, FaultKind, FaultPlan, FaultSpec, FaultyStorage
from kelpie.dst.loop import run_simulation
from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    StorageFullError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.memory import MemoryStorage

A = ActorId("acct", "a")


def faulty(*specs: FaultSpec, seed: int = 0) -> tuple[FaultyStorage, MemoryStorage]:
    inner = MemoryStorage()
    injector = FaultInjector(FaultPlan.of(*specs), random.Random(seed))
    return FaultyStorage(inner, injector), inner


def simulate(body: Callable[[], Awaitable[None]]) -> None:
    run_simulation(body)


def test_read_fail_raises_unavailable_never_not_found() -> None:
    async def main() -> None:
        storage, inner = faulty(FaultSpec(FaultKind.READ_FAIL, 1.0))
        await inner.set(A, b"k", b"v")
        with pytest.raises(StorageUnavailableError):
            await storage.get(A, b"k")
        with pytest.raises(StorageUnavailableError):
            await storage.list_keys(A)
        async with storage.transaction(A) as txn:
            with pytest.raises(StorageUnavailableError):
                await txn.get(b"k")
            await txn.set(b"k2", b"v2")  # writes are not reads
        assert await inner.get(A, b"k2") == b"v2"
        assert storage.injector.fired[FaultKind.READ_FAIL] == 3

    simulate(main)


def test_write_fail_raises_and_applies_nothing() -> None:
    async def main() -> None:
        storage, inner = faulty(FaultSpec(FaultKind.WRITE_FAIL, 1.0))
        with pytest.raises(StorageUnavailableError):
            await storage.set(A, b"k", b"v")
        with pytest.raises(StorageUnavailableError):
            await storage.delete(A, b"k")
        assert await storage.get(A, b"k") is None
        assert await inner.list_keys(A) == []

    simulate(main)


@pytest.mark.parametrize("kind", [FaultKind.CRASH_BEFORE_COMMIT, FaultKind.CRASH_DURING_COMMIT])
def test_crash_before_or_during_commit_applies_nothing(kind: FaultKind) -> None:
    async def main() -> None:
        storage, inner = faulty(FaultSpec(kind, 1.0))
        await inner.set(A, b"k", b"old")
        with pytest.raises(StorageUnavailableError):
            async with storage.transaction(A) as txn:
                await txn.set(b"k", b"new")
                await txn.set(b"k2", b"v2")
        assert await inner.get(A, b"k") == b"old"
        assert await inner.get(A, b"k2") is None
        assert storage.injector.fired[kind] == 1

    simulate(main)


def test_crash_after_commit_applies_and_reports_outcome_unknown() -> None:
    async def main() -> None:
        storage, inner = faulty(FaultSpec(FaultKind.CRASH_AFTER_COMMIT, 1.0))
        txn = storage.transaction(A)
        await txn.set(b"k", b"v")
        await txn.set(b"k2", b"v2")
        with pytest.raises(CommitOutcomeUnknownError):
            await txn.commit()
        assert await inner.get(A, b"k") == b"v"  # the write IS stored
        assert await inner.get(A, b"k2") == b"v2"

    simulate(main)


def test_lost_commit_applies_nothing_and_reports_outcome_unknown() -> None:
    async def main() -> None:
        storage, inner = faulty(FaultSpec(FaultKind.LOST_COMMIT, 1.0))
        await inner.set(A, b"k", b"old")
        txn = storage.transaction(A)
        await txn.set(b"k", b"new")
        await txn.set(b"k2", b"v2")
        with pytest.raises(CommitOutcomeUnknownError) as caught:
            await txn.commit()
        assert "not applied" in str(caught.value)
        assert await inner.get(A, b"k") == b"old"  # the request was lost: nothing stored
        assert await inner.get(A, b"k2") is None
        await storage.set(A, b"k", b"set")  # by default only transactions' commits are lost
        assert storage.injector.fired[FaultKind.LOST_COMMIT] == 1
        assert await inner.get(A, b"k") == b"set"

    simulate(main)


def test_batch_fail_fails_every_commit_of_the_batch_and_applies_none() -> None:
    async def main() -> None:
        inner = MemoryStorage(commit_latency=0.001)
        injector = FaultInjector(
            FaultPlan.of(FaultSpec(FaultKind.BATCH_FAIL, 1.0, start_after=0)), random.Random(0)
        )
        storage = FaultyStorage(inner, injector)
        inner.on_batch = lambda size, wait: injector.batch_fault(size)
        actors = [ActorId("acct", f"b{i}") for i in range(4)]

        async def commit(actor: ActorId) -> BaseException | None:
            try:
                async with storage.transaction(actor) as txn:
                    await txn.set(b"k", b"v")
            except StorageUnavailableError as exc:
                return exc
            return None

        outcomes = await asyncio.gather(*(commit(actor) for actor in actors))
        assert all(isinstance(o, StorageUnavailableError) for o in outcomes), outcomes
        assert "none applied" in str(outcomes[-1])
        for actor in actors:
            assert await inner.get(actor, b"k") is None
        assert injector.fired[FaultKind.BATCH_FAIL] >= 2  # the lead's batch and the drain's
        injector.enabled = False
        assert await commit(actors[0]) is None
        assert await inner.get(actors[0], b"k") == b"v"

    simulate(main)


def test_a_paused_handle_blocks_then_sends_writes_late_and_fails_reads() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        storage, inner = faulty()
        await inner.set(A, b"k", b"v0")
        stale = storage.transaction(A)
        assert await stale.get(b"k") == b"v0"  # read before the pause
        await stale.set(b"k", b"zombie")
        storage.pause()
        commit = asyncio.ensure_future(stale.commit())
        read = asyncio.ensure_future(storage.get(A, b"k"))
        await asyncio.sleep(5)
        assert not commit.done() and not read.done()  # everything blocks
        await inner.set(A, b"k", b"v1")  # meanwhile another process commits
        loop.call_later(1, storage.resume)
        with pytest.raises(StorageUnavailableError, match="frozen"):
            await read  # a read blocked by the pause timed out
        with pytest.raises(TransactionConflictError):
            await commit  # the zombie's late commit is refused by the version check
        assert loop.time() >= 6
        assert (storage.conflicts, storage.zombie_conflicts) == (1, 1)
        assert await storage.get(A, b"k") == b"v1"  # the handle works again

    simulate(main)


def test_commit_faults_reach_storage_level_writes_only_when_filtered_in() -> None:
    async def main() -> None:
        storage, inner = faulty(
            FaultSpec(FaultKind.CRASH_AFTER_COMMIT, 1.0, ops=frozenset({"set"}))
        )
        with pytest.raises(CommitOutcomeUnknownError):
            await storage.set(A, b"k", b"v")
        assert await inner.get(A, b"k") == b"v"
        async with storage.transaction(A) as txn:  # "commit" is filtered out
            await txn.set(b"k3", b"v3")
        assert await inner.get(A, b"k3") == b"v3"

    simulate(main)


def test_spurious_conflict_only_on_transactions_that_read() -> None:
    async def main() -> None:
        storage, inner = faulty(FaultSpec(FaultKind.SPURIOUS_CONFLICT, 1.0))
        async with storage.transaction(A) as txn:  # write-only: never conflicts
            await txn.set(b"k", b"v1")
        assert await inner.get(A, b"k") == b"v1"
        with pytest.raises(TransactionConflictError):
            async with storage.transaction(A) as txn:
                assert await txn.get(b"k") == b"v1"
                await txn.set(b"k", b"v2")
        assert await inner.get(A, b"k") == b"v1"
        assert storage.injector.fired[FaultKind.SPURIOUS_CONFLICT] == 1

    simulate(main)


def test_storage_full_applies_nothing() -> None:
    async def main() -> None:
        storage, inner = faulty(FaultSpec(FaultKind.STORAGE_FULL, 1.0))
        with pytest.raises(StorageFullError):
            async with storage.transaction(A) as txn:
                await txn.set(b"k", b"v")
        assert await inner.get(A, b"k") is None
        async with storage.transaction(A) as txn:  # nothing to write: not full
            await txn.get(b"k")

    simulate(main)


def test_latency_delays_in_virtual_time_and_reorders_concurrent_work() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        spec = FaultSpec(FaultKind.LATENCY, 0.5, latency=(1.0, 5.0))
        storage, inner = faulty(spec, seed=4)
        finished: list[int] = []

        async def write(i: int) -> None:
            await storage.set(A, f"k{i}".encode(), b"v")
            finished.append(i)

        await asyncio.gather(*(write(i) for i in range(20)))
        assert len(await inner.list_keys(A)) == 20
        fired = storage.injector.fired[FaultKind.LATENCY]
        print(f"latency fired {fired} times; order {finished}; t={loop.time()}")
        assert 0 < fired < 20
        assert finished != sorted(finished)  # delayed writes finished later
        assert 1.0 <= loop.time() <= 5.0

    simulate(main)


def test_outage_fails_every_operation_for_its_window() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        spec = FaultSpec(FaultKind.OUTAGE, 1.0, max_triggers=1, duration=10.0)
        storage, _ = faulty(spec)
        start = loop.time()
        for _ in range(3):
            with pytest.raises(StorageUnavailableError):
                await storage.get(A, b"k")
            with pytest.raises(StorageUnavailableError):
                await storage.set(A, b"k", b"v")
            await asyncio.sleep(3)
        assert loop.time() - start < 10.0
        await asyncio.sleep(10)
        await storage.set(A, b"k", b"v")  # the window is over
        assert await storage.get(A, b"k") == b"v"
        assert storage.injector.fired[FaultKind.OUTAGE] == 1
        assert storage.injector.outage_rejections == 6

    simulate(main)


def test_max_triggers_is_respected() -> None:
    async def main() -> None:
        storage, _ = faulty(FaultSpec(FaultKind.READ_FAIL, 1.0, max_triggers=3))
        failures = 0
        for _ in range(10):
            try:
                await storage.get(A, b"k")
            except StorageUnavailableError:
                failures += 1
        assert failures == 3
        assert storage.injector.fired[FaultKind.READ_FAIL] == 3

    simulate(main)


def test_start_after_is_respected() -> None:
    async def main() -> None:
        storage, _ = faulty(FaultSpec(FaultKind.READ_FAIL, 1.0, start_after=5))
        outcomes = []
        for _ in range(8):
            try:
                await storage.get(A, b"k")
                outcomes.append("ok")
            except StorageUnavailableError:
                outcomes.append("fail")
        assert outcomes == ["ok"] * 5 + ["fail"] * 3

    simulate(main)


def test_operation_filter_is_respected() -> None:
    async def main() -> None:
        storage, _ = faulty(FaultSpec(FaultKind.READ_FAIL, 1.0, ops=frozenset({"list_keys"})))
        assert await storage.get(A, b"k") is None
        with pytest.raises(StorageUnavailableError):
            await storage.list_keys(A)

    simulate(main)


def test_a_commit_only_fault_leaves_reads_and_buffered_writes_alone() -> None:
    async def main() -> None:
        storage, inner = faulty(FaultSpec(FaultKind.CRASH_DURING_COMMIT, 1.0))
        await inner.set(A, b"k", b"v")
        txn = storage.transaction(A)
        assert await txn.get(b"k") == b"v"
        await txn.set(b"k", b"w")
        assert await txn.list_keys() == [b"k"]
        with pytest.raises(StorageUnavailableError):
            await txn.commit()

    simulate(main)


def test_disabled_injector_and_never_fired_report() -> None:
    async def main() -> None:
        storage, _ = faulty(
            FaultSpec(FaultKind.READ_FAIL, 1.0), FaultSpec(FaultKind.STORAGE_FULL, 0.5)
        )
        storage.injector.enabled = False
        await storage.get(A, b"k")
        await storage.set(A, b"k", b"v")
        assert storage.injector.never_fired() == ["read_fail", "storage_full"]
        storage.injector.enabled = True
        with pytest.raises(StorageUnavailableError):
            await storage.get(A, b"k")
        assert storage.injector.never_fired() == ["storage_full"]

    simulate(main)


def test_a_severed_handle_reaches_nothing() -> None:
    async def main() -> None:
        storage, inner = faulty()
        txn = storage.transaction(A)
        await txn.set(b"k", b"v")
        storage.sever()
        with pytest.raises(StorageUnavailableError):
            await txn.commit()
        with pytest.raises(StorageUnavailableError):
            await storage.set(A, b"k", b"v")
        with pytest.raises(StorageUnavailableError):
            storage.transaction(A)
        assert await inner.get(A, b"k") is None

    simulate(main)


def test_the_wrapper_works_on_a_real_event_loop() -> None:
    async def main() -> None:
        spec = FaultSpec(FaultKind.LATENCY, 1.0, latency=(0.0, 0.001))
        storage, inner = faulty(spec, FaultSpec(FaultKind.CRASH_AFTER_COMMIT, 1.0))
        with pytest.raises(CommitOutcomeUnknownError):
            async with storage.transaction(A) as txn:
                await txn.set(b"k", b"v")
        assert await inner.get(A, b"k") == b"v"

    asyncio.run(main())


def test_fault_specs_parse_and_describe() -> None:
    plan = FaultPlan.parse(
        "crash_after_commit:p=0.5:ops=commit|set:after=3:max=2,latency:delay=1-2"
    )
    after, latency = plan.specs
    assert after == FaultSpec(
        FaultKind.CRASH_AFTER_COMMIT,
        0.5,
        ops=frozenset({"commit", "set"}),
        start_after=3,
        max_triggers=2,
    )
    assert latency.latency == (1.0, 2.0)
    assert FaultPlan.parse(plan.describe()) == plan
    assert {s.kind for s in FaultPlan.parse("all").specs} == set(FaultKind)
    assert FaultPlan.parse("none").specs == ()
    doubled = FaultPlan.parse("all*2")
    assert doubled.specs[0].probability == 2 * FaultPlan.everything().specs[0].probability
    for bad in ("nope", "latency:p=2", "latency:x=1", "read_fail:ops=fly", "latency:p"):
        with pytest.raises(ConfigError):
            FaultPlan.parse(bad)
