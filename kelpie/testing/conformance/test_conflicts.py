"""No lost updates: a transaction that read conflicts with any later commit on its actor."""

from __future__ import annotations

import asyncio

import pytest

from kelpie.errors import TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage.protocol import Storage
from kelpie.testing.conformance._support import bounded
from kelpie.testing.plugin import ActorFactory, Reopen

__all__ = ["TestConflicts"]

TASKS = 20


async def _increment(storage: Storage, actor: ActorId, *, pause: bool = True) -> bool:
    """Read-modify-write the counter once; True if it committed, False on a conflict."""
    try:
        async with storage.transaction(actor) as txn:
            current = await txn.get(b"counter")
            if pause:
                await asyncio.sleep(0)  # let other tasks read and commit in between
            await txn.set(b"counter", str(int(current or b"0") + 1).encode())
    except TransactionConflictError:
        return False
    return True


async def _counter(storage: Storage, actor: ActorId) -> int:
    return int(await storage.get(actor, b"counter") or b"0")


@pytest.mark.asyncio
class TestConflicts:
    async def test_a_commit_after_this_transactions_read_makes_it_conflict_and_write_nothing(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("conflict")
        await storage.set(actor, b"counter", b"0")
        txn = storage.transaction(actor)
        assert await txn.get(b"counter") == b"0"
        await txn.set(b"counter", b"1")
        await txn.set(b"extra", b"from the loser")
        await storage.set(actor, b"counter", b"10")  # another commit lands
        with pytest.raises(TransactionConflictError):
            await txn.commit()
        assert await storage.get(actor, b"counter") == b"10"
        assert await storage.get(actor, b"extra") is None

    async def test_a_read_via_list_keys_counts_for_conflicts(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("list-conflict")
        txn = storage.transaction(actor)
        assert await txn.list_keys() == []
        await txn.set(b"first", b"I saw no keys")
        await storage.set(actor, b"other", b"landed")
        with pytest.raises(TransactionConflictError):
            await txn.commit()
        assert await storage.list_keys(actor) == [b"other"]

    async def test_a_conflict_is_detected_when_the_other_commit_only_deletes(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("delete-conflict")
        await storage.set(actor, b"k", b"v")
        txn = storage.transaction(actor)
        assert await txn.get(b"k") == b"v"
        await storage.delete(actor, b"k")
        await txn.set(b"k", b"stale rewrite")
        with pytest.raises(TransactionConflictError):
            await txn.commit()
        assert await storage.get(actor, b"k") is None

    async def test_a_read_with_no_commit_in_between_commits(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("no-conflict")
        other = new_actor("other-actor")
        await storage.set(actor, b"counter", b"1")
        async with storage.transaction(actor) as txn:
            value = await txn.get(b"counter")
            assert await txn.list_keys() == [b"counter"]
            await storage.set(other, b"counter", b"99")  # another actor: no conflict
            await txn.set(b"counter", str(int(value or b"0") + 1).encode())
        assert await storage.get(actor, b"counter") == b"2"

    async def test_a_write_only_transaction_never_conflicts(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("write-only")
        txn = storage.transaction(actor)
        await txn.set(b"k", b"blind write")
        await txn.delete(b"gone")
        await storage.set(actor, b"k", b"landed first")
        await storage.set(actor, b"gone", b"landed first")
        await txn.commit()
        assert await storage.get(actor, b"k") == b"blind write"
        assert await storage.get(actor, b"gone") is None

    async def test_concurrent_increments_lose_no_update(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("increments")
        outcomes = await bounded(
            asyncio.gather(*(_increment(storage, actor) for _ in range(TASKS)))
        )
        committed = sum(outcomes)
        assert committed >= 1
        assert await _counter(storage, actor) == committed

    async def test_when_every_increment_reads_first_exactly_one_commits(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("all-read-first")
        await storage.set(actor, b"counter", b"0")
        barrier = asyncio.Barrier(TASKS)

        async def increment() -> bool:
            try:
                async with storage.transaction(actor) as txn:
                    current = await txn.get(b"counter")
                    await barrier.wait()  # every task has read before anyone commits
                    await txn.set(b"counter", str(int(current or b"0") + 1).encode())
            except TransactionConflictError:
                return False
            return True

        outcomes = await bounded(asyncio.gather(*(increment() for _ in range(TASKS))))
        assert sum(outcomes) == 1
        assert await _counter(storage, actor) == 1

    async def test_increments_retried_on_conflict_all_land(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("retried")

        async def increment_until_committed() -> int:
            attempts = 1
            while not await _increment(storage, actor):
                attempts += 1
            return attempts

        attempts = await bounded(
            asyncio.gather(*(increment_until_committed() for _ in range(TASKS)))
        )
        assert await _counter(storage, actor) == TASKS
        assert sum(attempts) >= TASKS

    async def test_concurrent_write_only_transactions_all_commit(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("blind-writes")

        async def write(n: int) -> None:
            async with storage.transaction(actor) as txn:
                await txn.set(b"own-%02d" % n, b"%d" % n)
                await asyncio.sleep(0)
                await txn.set(b"shared", b"%d" % n)

        await bounded(asyncio.gather(*(write(n) for n in range(TASKS))))
        assert await storage.list_keys(actor, b"own-") == [b"own-%02d" % n for n in range(TASKS)]
        shared = await storage.get(actor, b"shared")
        assert shared is not None and int(shared) in range(TASKS)

    async def test_two_storages_on_one_store_see_each_others_commits_and_conflict(
        self, storage: Storage, open_storage_again: Reopen, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("two-storages")
        other = await open_storage_again()
        await storage.set(actor, b"k", b"from the first")
        assert await other.get(actor, b"k") == b"from the first"
        txn = storage.transaction(actor)
        assert await txn.get(b"k") == b"from the first"
        await other.set(actor, b"k", b"from the second")
        await txn.set(b"k", b"stale")
        with pytest.raises(TransactionConflictError):
            await txn.commit()
        assert await storage.get(actor, b"k") == b"from the second"
        assert await other.list_keys(actor) == [b"k"]
