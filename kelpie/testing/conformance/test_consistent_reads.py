"""Consistent reads: everything a transaction read comes from one committed version.

A transaction that writes nothing is still checked at ``commit()``: if another
commit landed on its actor after its first read, ``commit()`` raises
``TransactionConflictError`` (the reads may mix two versions); otherwise it
succeeds and changes nothing. ``abort()`` checks nothing.
"""

from __future__ import annotations

import asyncio

import pytest

from kelpie.errors import TransactionConflictError
from kelpie.storage.protocol import Storage
from kelpie.testing.conformance._support import bounded
from kelpie.testing.plugin import ActorFactory, Reopen

__all__ = ["TestConsistentReads"]


@pytest.mark.asyncio
class TestConsistentReads:
    async def test_a_read_only_commit_after_another_commit_landed_conflicts(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("torn-read")
        await storage.set(actor, b"a", b"1")
        await storage.set(actor, b"b", b"1")
        txn = storage.transaction(actor)
        assert await txn.get(b"a") == b"1"
        async with storage.transaction(actor) as other:  # a commit changing both keys
            await other.set(b"a", b"2")
            await other.set(b"b", b"2")
        assert await txn.get(b"b") == b"2"  # a pair (1, 2) that never existed...
        with pytest.raises(TransactionConflictError):
            await txn.commit()  # ...so the transaction must not end as a success
        assert await storage.get(actor, b"a") == b"2"
        assert await storage.list_keys(actor) == [b"a", b"b"]

    @pytest.mark.parametrize("reads", [2, 3])
    async def test_a_commit_after_the_last_of_several_reads_makes_a_read_only_commit_conflict(
        self, storage: Storage, new_actor: ActorFactory, reads: int
    ) -> None:
        actor = new_actor("late-change")
        await storage.set(actor, b"a", b"1")
        txn = storage.transaction(actor)
        for _ in range(reads - 1):
            assert await txn.get(b"a") == b"1"
        assert await txn.list_keys() == [b"a"]  # every read saw one version...
        await storage.set(actor, b"a", b"2")  # ...then the actor changed before commit()
        with pytest.raises(TransactionConflictError):
            await txn.commit()
        assert await storage.get(actor, b"a") == b"2"

    async def test_a_listing_then_a_commit_elsewhere_makes_a_read_only_commit_conflict(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("torn-listing")
        await storage.set(actor, b"k1", b"v")
        txn = storage.transaction(actor)
        assert await txn.list_keys(b"k") == [b"k1"]
        await storage.set(actor, b"k1", b"changed")
        with pytest.raises(TransactionConflictError):
            await txn.commit()

    async def test_a_read_only_commit_with_nothing_in_between_succeeds_and_writes_nothing(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("quiet-read")
        other = new_actor("quiet-read-other")
        await storage.set(actor, b"a", b"1")
        async with storage.transaction(actor) as txn:
            assert await txn.get(b"a") == b"1"
            assert await txn.get(b"missing") is None
            assert await txn.list_keys() == [b"a"]
            await storage.set(other, b"a", b"elsewhere")  # another actor: no conflict
        assert await storage.get(actor, b"a") == b"1"
        # Nothing was written: a transaction that read before this one still commits.
        txn = storage.transaction(actor)
        assert await txn.get(b"a") == b"1"
        async with storage.transaction(actor) as reader:
            assert await reader.get(b"a") == b"1"
        await txn.set(b"a", b"2")
        await txn.commit()
        assert await storage.get(actor, b"a") == b"2"

    async def test_a_commit_before_the_first_read_does_not_conflict(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("read-after")
        txn = storage.transaction(actor)
        await storage.set(actor, b"a", b"landed before the first read")
        assert await txn.get(b"a") == b"landed before the first read"
        await txn.commit()

    async def test_a_transaction_that_read_nothing_commits_and_abort_checks_nothing(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("no-reads")
        txn = storage.transaction(actor)
        await storage.set(actor, b"a", b"1")
        await txn.commit()
        aborted = storage.transaction(actor)
        assert await aborted.get(b"a") == b"1"
        await storage.set(actor, b"a", b"2")
        await aborted.abort()  # the caller gave up on what it read: no error

    async def test_a_read_only_transaction_on_another_storage_of_the_store_conflicts(
        self, storage: Storage, open_storage_again: Reopen, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("torn-two-storages")
        other = await open_storage_again()
        await storage.set(actor, b"a", b"1")
        txn = storage.transaction(actor)
        assert await txn.get(b"a") == b"1"
        await other.set(actor, b"a", b"2")
        with pytest.raises(TransactionConflictError):
            await txn.commit()

    async def test_concurrent_readers_and_a_writer_never_see_a_mixed_pair(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        """Readers read ``a`` then ``b``; a writer keeps setting both to one number."""
        actor = new_actor("pairs")
        await storage.set(actor, b"a", b"0")
        await storage.set(actor, b"b", b"0")
        seen: list[tuple[bytes | None, bytes | None]] = []
        conflicts = 0

        async def writer() -> None:
            for n in range(1, 30):
                async with storage.transaction(actor) as txn:
                    await txn.set(b"a", b"%d" % n)
                    await asyncio.sleep(0)
                    await txn.set(b"b", b"%d" % n)
                await asyncio.sleep(0)

        async def reader() -> None:
            nonlocal conflicts
            for _ in range(30):
                try:
                    async with storage.transaction(actor) as txn:
                        a = await txn.get(b"a")
                        await asyncio.sleep(0)
                        b = await txn.get(b"b")
                except TransactionConflictError:
                    conflicts += 1
                else:
                    seen.append((a, b))

        await bounded(asyncio.gather(writer(), reader(), reader()))
        mixed = [pair for pair in seen if pair[0] != pair[1]]
        assert mixed == [], f"read-only transactions returned mixed versions: {mixed[:5]}"
        assert len(seen) + conflicts == 60
