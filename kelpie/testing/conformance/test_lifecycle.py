"""Durability across close and reopen, and the storage lifecycle."""

from __future__ import annotations

import pytest

from kelpie.errors import StorageClosedError
from kelpie.storage.protocol import Storage
from kelpie.testing.plugin import ActorFactory, Reopen

__all__ = ["TestLifecycle"]


@pytest.mark.asyncio
class TestLifecycle:
    async def test_everything_committed_is_there_after_close_and_reopen(
        self, storage: Storage, open_storage_again: Reopen, new_actor: ActorFactory
    ) -> None:
        first, second = new_actor("durable-1"), new_actor("durable-2")
        await storage.set(first, b"a", b"1")
        await storage.set(first, b"empty", b"")
        await storage.set(first, b"deleted", b"x")
        await storage.delete(first, b"deleted")
        async with storage.transaction(second) as txn:
            for b in range(256):
                await txn.set(bytes([b]), bytes([b]) * 3)
        aborted = storage.transaction(first)
        await aborted.set(b"aborted", b"never")
        await aborted.abort()
        await storage.close()

        reopened = await open_storage_again()
        assert await reopened.list_keys(first) == [b"a", b"empty"]
        assert await reopened.get(first, b"a") == b"1"
        assert await reopened.get(first, b"empty") == b""
        assert await reopened.get(first, b"deleted") is None
        assert await reopened.list_keys(second) == [bytes([b]) for b in range(256)]
        for b in range(256):
            assert await reopened.get(second, bytes([b])) == bytes([b]) * 3
        # And it still accepts writes and transactions that read.
        async with reopened.transaction(first) as txn:
            assert await txn.get(b"a") == b"1"
            await txn.set(b"a", b"2")
        assert await reopened.get(first, b"a") == b"2"

    async def test_every_call_after_close_raises_storage_closed(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("closed")
        await storage.set(actor, b"k", b"v")
        await storage.close()
        with pytest.raises(StorageClosedError):
            await storage.get(actor, b"k")
        with pytest.raises(StorageClosedError):
            await storage.set(actor, b"k", b"v2")
        with pytest.raises(StorageClosedError):
            await storage.delete(actor, b"k")
        with pytest.raises(StorageClosedError):
            await storage.list_keys(actor)
        with pytest.raises(StorageClosedError):
            async with storage.transaction(actor) as txn:
                await txn.set(b"k", b"v3")

    async def test_a_transaction_left_open_at_close_cannot_commit(
        self, storage: Storage, open_storage_again: Reopen, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("open-at-close")
        txn = storage.transaction(actor)
        await txn.set(b"k", b"never")
        await storage.close()
        with pytest.raises(StorageClosedError):
            await txn.commit()
        reopened = await open_storage_again()
        assert await reopened.get(actor, b"k") is None

    async def test_close_is_idempotent(
        self, storage: Storage, open_storage_again: Reopen, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("close-twice")
        await storage.set(actor, b"k", b"v")
        await storage.close()
        await storage.close()
        reopened = await open_storage_again()
        assert await reopened.get(actor, b"k") == b"v"

    async def test_leaving_async_with_closes_the_storage(
        self, open_storage_again: Reopen, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("context-manager")
        async with await open_storage_again() as opened:
            await opened.set(actor, b"k", b"v")
        with pytest.raises(StorageClosedError):
            await opened.get(actor, b"k")
        reopened = await open_storage_again()
        assert await reopened.get(actor, b"k") == b"v"

    async def test_a_closed_storage_leaves_another_on_the_same_store_usable(
        self, storage: Storage, open_storage_again: Reopen, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("independent-close")
        other = await open_storage_again()
        await storage.set(actor, b"k", b"v")
        await storage.close()
        assert await other.get(actor, b"k") == b"v"
        await other.set(actor, b"k2", b"v2")
        assert await other.list_keys(actor) == [b"k", b"k2"]
