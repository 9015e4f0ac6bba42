"""``BufferedTransaction.buffer_set`` (the path of ``kv_set``) behaves exactly like ``set``."""

from __future__ import annotations

from typing import Any

import pytest

from kelpie import ActorId, open_storage
from kelpie.actor.context import ActorContext
from kelpie.errors import (
    InvalidKeyError,
    StorageClosedError,
    TransactionClosedError,
    ValueTooLargeError,
)
from kelpie.storage.base import (
    BufferedTransaction,
    buffered_deleter,
    buffered_setter,
    write_buffer,
)
from kelpie.storage.limits import MAX_VALUE_BYTES
from kelpie.storage.wrapper import StorageWrapper

ACTOR = ActorId("t", "a")


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("str-key", b"v", TypeError),
        (b"", b"v", InvalidKeyError),
        (b"k" * 257, b"v", InvalidKeyError),
        (b"k", "str-value", TypeError),
        (b"k", b"x" * (MAX_VALUE_BYTES + 1), ValueTooLargeError),
    ],
)
async def test_bad_input_raises_what_set_raises_and_buffers_nothing(
    key: Any, value: Any, error: type[Exception]
) -> None:
    async with open_storage("memory://") as storage:
        txn = storage.transaction(ACTOR)
        assert isinstance(txn, BufferedTransaction)
        with pytest.raises(error):
            await txn.set(key, value)
        with pytest.raises(error):
            txn.buffer_set(key, value)
        txn.buffer_set(b"good", b"1")
        await txn.commit()
        assert await storage.list_keys(ACTOR) == [b"good"]


async def test_a_closed_transaction_or_storage_refuses_a_buffered_write() -> None:
    storage = open_storage("memory://")
    txn = storage.transaction(ACTOR)
    assert isinstance(txn, BufferedTransaction)
    await txn.abort()
    with pytest.raises(TransactionClosedError):
        txn.buffer_set(b"k", b"v")
    open_txn = storage.transaction(ACTOR)
    assert isinstance(open_txn, BufferedTransaction)
    await storage.close()
    with pytest.raises(StorageClosedError):
        open_txn.buffer_set(b"k", b"v")


async def test_kv_set_reads_back_through_either_path() -> None:
    async with open_storage("memory://") as storage:
        wrapped = StorageWrapper(storage)
        for store in (storage, wrapped):
            txn = store.transaction(ACTOR)
            ctx: ActorContext[dict[str, int]] = ActorContext(ACTOR, {}, txn)
            await ctx.kv_set(b"k", b"v")
            assert ctx.wrote
            assert await ctx.kv_get(b"k") == b"v"
            with pytest.raises(TypeError):
                await ctx.kv_set(b"k", "not bytes")  # type: ignore[arg-type]
            with pytest.raises(InvalidKeyError):
                await ctx.kv_set(b"k" * 241, b"v")
            await txn.commit()
        assert await storage.get(ACTOR, b"uk") == b"v"


async def test_buffer_delete_refuses_what_delete_refuses_and_deletes_like_it() -> None:
    async with open_storage("memory://") as storage:
        await storage.set(ACTOR, b"gone", b"1")
        txn = storage.transaction(ACTOR)
        assert isinstance(txn, BufferedTransaction)
        bad: Any
        for bad, error in (("str-key", TypeError), (b"", InvalidKeyError)):
            with pytest.raises(error):
                await txn.delete(bad)
            with pytest.raises(error):
                txn.buffer_delete(bad)
        txn.buffer_delete(b"gone")
        assert await txn.get(b"gone") is None  # reads see the buffered delete
        await txn.commit()
        assert await storage.list_keys(ACTOR) == []
        closed = storage.transaction(ACTOR)
        assert isinstance(closed, BufferedTransaction)
        await closed.abort()
        with pytest.raises(TransactionClosedError):
            closed.buffer_delete(b"k")


class _LoggedDeletes(BufferedTransaction):
    """A transaction type that does something of its own on ``delete``."""

    async def delete(self, key: bytes) -> None:
        await super().delete(key)


class _Forwarding:
    """A wrapper that forwards every attribute to the transaction inside it."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_only_a_transaction_whose_writes_only_buffer_gets_the_fast_path() -> None:
    async with open_storage("memory://") as storage:
        txn = storage.transaction(ACTOR)
        assert buffered_setter(txn) is not None and buffered_deleter(txn) is not None
        # Writes must go through a forwarding wrapper's own methods, not around them.
        assert buffered_setter(_Forwarding(txn)) is None
        assert buffered_deleter(_Forwarding(txn)) is None
        await txn.abort()
    assert _LoggedDeletes._plain_writes is False  # a subclass that overrides delete
    assert buffered_deleter(object()) is None


async def test_write_buffer_is_the_open_buffer_of_kelpie_s_own_transactions_only() -> None:
    async with open_storage("memory://") as storage:
        txn = storage.transaction(ACTOR)
        writes = write_buffer(txn)
        assert writes is not None and writes == {}
        writes[b"k"] = b"v"  # what the runtime does with its own records
        assert await txn.get(b"k") == b"v"  # read-your-writes, as after buffer_set
        assert write_buffer(_Forwarding(txn)) is None
        assert write_buffer(object()) is None
        await txn.commit()
        assert await storage.get(ACTOR, b"k") == b"v"  # the commit carried it
        assert write_buffer(txn) is None  # committed: writes go through set, which raises
        other = storage.transaction(ACTOR)
    assert write_buffer(other) is None  # the storage is closed
