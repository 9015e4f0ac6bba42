"""Transactions: all or nothing, read-your-writes, last write wins, closed after commit/abort."""

from __future__ import annotations

import pytest

from kelpie.errors import TransactionClosedError
from kelpie.storage.protocol import Storage, Transaction
from kelpie.testing.plugin import ActorFactory

__all__ = ["TestTransactions"]


class _BodyFailed(Exception):
    pass


async def _each_call_raises_closed(txn: Transaction) -> None:
    with pytest.raises(TransactionClosedError):
        await txn.get(b"k")
    with pytest.raises(TransactionClosedError):
        await txn.set(b"k", b"v")
    with pytest.raises(TransactionClosedError):
        await txn.delete(b"k")
    with pytest.raises(TransactionClosedError):
        await txn.list_keys()
    with pytest.raises(TransactionClosedError):
        await txn.commit()
    with pytest.raises(TransactionClosedError):
        await txn.abort()


@pytest.mark.asyncio
class TestTransactions:
    async def test_leaving_the_block_normally_commits(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("commit-on-exit")
        await storage.set(actor, b"gone", b"x")
        async with storage.transaction(actor) as txn:
            await txn.set(b"a", b"1")
            await txn.set(b"b", b"2")
            await txn.delete(b"gone")
        assert await storage.list_keys(actor) == [b"a", b"b"]
        assert await storage.get(actor, b"a") == b"1"

    async def test_a_body_that_raises_writes_nothing(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("all-or-nothing")
        await storage.set(actor, b"kept", b"before")
        with pytest.raises(_BodyFailed):
            async with storage.transaction(actor) as txn:
                await txn.set(b"kept", b"after")
                await txn.set(b"new", b"1")
                await txn.delete(b"kept")
                await txn.set(b"other", b"2")
                raise _BodyFailed
        assert await storage.list_keys(actor) == [b"kept"]
        assert await storage.get(actor, b"kept") == b"before"
        assert await storage.get(actor, b"new") is None

    async def test_abort_discards_every_write(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("abort")
        await storage.set(actor, b"kept", b"before")
        txn = storage.transaction(actor)
        await txn.set(b"kept", b"after")
        await txn.set(b"new", b"1")
        await txn.abort()
        assert await storage.list_keys(actor) == [b"kept"]
        assert await storage.get(actor, b"kept") == b"before"

    async def test_get_sees_the_transactions_own_sets_and_deletes(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("read-your-writes")
        await storage.set(actor, b"stored", b"old")
        await storage.set(actor, b"doomed", b"x")
        async with storage.transaction(actor) as txn:
            await txn.set(b"fresh", b"new")
            await txn.set(b"stored", b"replaced")
            await txn.delete(b"doomed")
            assert await txn.get(b"fresh") == b"new"
            assert await txn.get(b"stored") == b"replaced"
            assert await txn.get(b"doomed") is None
            # Nothing is visible outside the transaction before it commits.
            assert await storage.get(actor, b"fresh") is None
            assert await storage.get(actor, b"stored") == b"old"
            assert await storage.get(actor, b"doomed") == b"x"
        assert await storage.get(actor, b"stored") == b"replaced"

    async def test_list_keys_merges_buffered_sets_and_deletes_with_stored_keys(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("list-your-writes")
        async with storage.transaction(actor) as txn:
            for key in (b"a1", b"a3", b"b1", b"\xff"):
                await txn.set(key, b"v")
        async with storage.transaction(actor) as txn:
            await txn.set(b"a2", b"v")
            await txn.set(b"\x00", b"v")
            await txn.set(b"a", b"v")
            await txn.delete(b"a3")
            await txn.delete(b"a9")  # absent: deleting it changes nothing
            assert await txn.list_keys() == [b"\x00", b"a", b"a1", b"a2", b"b1", b"\xff"]
            assert await txn.list_keys(b"a") == [b"a", b"a1", b"a2"]
            assert await txn.list_keys(b"a3") == []
            assert await txn.list_keys(b"b") == [b"b1"]
            await txn.set(b"a3", b"back")
            assert await txn.list_keys(b"a") == [b"a", b"a1", b"a2", b"a3"]
            assert await storage.list_keys(actor) == [b"a1", b"a3", b"b1", b"\xff"]
        assert await storage.list_keys(actor) == [
            b"\x00",
            b"a",
            b"a1",
            b"a2",
            b"a3",
            b"b1",
            b"\xff",
        ]
        assert await storage.get(actor, b"a3") == b"back"

    async def test_the_last_operation_on_a_key_wins(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("last-wins")
        await storage.set(actor, b"delete-after-set", b"stored")
        await storage.set(actor, b"set-after-delete", b"stored")
        async with storage.transaction(actor) as txn:
            await txn.set(b"set-delete-set", b"1")
            await txn.delete(b"set-delete-set")
            await txn.set(b"set-delete-set", b"3")
            await txn.set(b"delete-after-set", b"new")
            await txn.delete(b"delete-after-set")
            await txn.delete(b"set-after-delete")
            await txn.set(b"set-after-delete", b"new")
            await txn.set(b"set-twice", b"first")
            await txn.set(b"set-twice", b"second")
            await txn.set(b"set-then-delete-new", b"x")
            await txn.delete(b"set-then-delete-new")
            assert await txn.get(b"set-delete-set") == b"3"
            assert await txn.get(b"delete-after-set") is None
        assert await storage.get(actor, b"set-delete-set") == b"3"
        assert await storage.get(actor, b"delete-after-set") is None
        assert await storage.get(actor, b"set-after-delete") == b"new"
        assert await storage.get(actor, b"set-twice") == b"second"
        assert await storage.list_keys(actor) == [
            b"set-after-delete",
            b"set-delete-set",
            b"set-twice",
        ]

    async def test_every_call_after_commit_raises_transaction_closed(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("after-commit")
        txn = storage.transaction(actor)
        await txn.set(b"k", b"committed")
        await txn.commit()
        await _each_call_raises_closed(txn)
        assert await storage.get(actor, b"k") == b"committed"

    async def test_every_call_after_abort_raises_transaction_closed(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("after-abort")
        txn = storage.transaction(actor)
        await txn.set(b"k", b"aborted")
        await txn.abort()
        await _each_call_raises_closed(txn)
        assert await storage.get(actor, b"k") is None

    async def test_leaving_the_block_after_an_explicit_commit_does_nothing_more(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("explicit-commit")
        async with storage.transaction(actor) as txn:
            await txn.set(b"k", b"committed")
            await txn.commit()
        assert await storage.get(actor, b"k") == b"committed"
        # An exception after the explicit commit does not undo it.
        with pytest.raises(_BodyFailed):
            async with storage.transaction(actor) as txn:
                await txn.set(b"k2", b"committed too")
                await txn.commit()
                raise _BodyFailed
        assert await storage.list_keys(actor) == [b"k", b"k2"]

    async def test_leaving_the_block_after_an_explicit_abort_does_nothing_more(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("explicit-abort")
        async with storage.transaction(actor) as txn:
            await txn.set(b"k", b"aborted")
            await txn.abort()
        assert await storage.list_keys(actor) == []
        with pytest.raises(_BodyFailed):
            async with storage.transaction(actor) as txn:
                await txn.set(b"k", b"aborted")
                await txn.abort()
                raise _BodyFailed
        assert await storage.list_keys(actor) == []

    async def test_a_transaction_does_not_see_another_transactions_uncommitted_writes(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("isolation")
        writer = storage.transaction(actor)
        await writer.set(b"k", b"uncommitted")
        async with storage.transaction(actor) as reader:
            assert await reader.get(b"k") is None
            assert await reader.list_keys() == []
        await writer.commit()
        assert await storage.get(actor, b"k") == b"uncommitted"

    async def test_a_commit_with_no_writes_succeeds_and_changes_nothing(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("empty-commit")
        await storage.set(actor, b"k", b"v")
        async with storage.transaction(actor) as txn:
            assert await txn.get(b"k") == b"v"
        txn = storage.transaction(actor)
        await txn.commit()
        assert await storage.list_keys(actor) == [b"k"]

    async def test_a_commit_of_thousands_of_writes_applies_every_one(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("big-commit")
        keys = [b"key-%05d" % n for n in range(2500)]
        async with storage.transaction(actor) as txn:
            for key in keys:
                await txn.set(key, key[::-1])
        assert await storage.list_keys(actor) == keys
        assert await storage.get(actor, keys[1234]) == keys[1234][::-1]
        async with storage.transaction(actor) as txn:
            assert await txn.get(keys[0]) == keys[0][::-1]
            for key in keys[:2000]:
                await txn.delete(key)
            await txn.set(b"after", b"1")
        assert await storage.list_keys(actor) == [b"after", *keys[2000:]]
        assert await storage.get(actor, keys[0]) is None
