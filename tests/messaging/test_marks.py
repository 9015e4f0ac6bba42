"""A target's activation remembers its high-water marks; its fence keeps them true (ADR 0020)."""

from __future__ import annotations

from typing import Any

from kelpie import ActorId, Runtime, Storage
from kelpie.messaging import records
from kelpie.storage.protocol import Transaction
from kelpie.storage.wrapper import StorageWrapper, TransactionWrapper
from kelpie.testing.plugin import Reopen
from tests.messaging.actors import Account, acct, settle
from tests.messaging.conftest import on_backends


class _MarkReads(TransactionWrapper):
    def __init__(self, owner: MarkReads, inner: Transaction) -> None:
        super().__init__(inner)
        self._owner = owner

    async def get(self, key: bytes) -> bytes | None:
        if key.startswith(records.HIGH_WATER):
            self._owner.reads += 1
        return await self.inner.get(key)


class MarkReads(StorageWrapper):
    """Counts the reads of high-water marks that reach the store."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.reads = 0

    def transaction(self, actor: ActorId) -> Transaction:
        return _MarkReads(self, self.inner.transaction(actor))


def _runtime(storage: Storage) -> Runtime:
    # Retries: a call on an actor the other runtime committed meanwhile conflicts once.
    rt = Runtime(storage, invocation_timeout=5.0, conflict_retries=3)
    rt.register("acct", Account)
    return rt


async def _balance(rt: Runtime, name: str) -> Any:
    return (await rt.invoke(acct(name), "state"))["balance"]


def _transfer(note: str) -> dict[str, Any]:
    return {"to": "t", "amount": 1, "note": note}


@on_backends
async def test_a_target_reads_a_senders_mark_from_the_store_once(storage: Storage) -> None:
    counted = MarkReads(storage)
    async with _runtime(counted) as rt:
        for n in range(5):
            await rt.invoke(acct("s"), "transfer", _transfer(f"n{n}"))

            async def applied(n: int = n) -> bool:
                return bool(await _balance(rt, "t") == n + 1)

            await settle(applied)
        assert counted.reads == 1
        assert (await rt.invoke(acct("t"), "state"))["log"] == [f"n{n}" for n in range(5)]


@on_backends
async def test_a_mark_moved_by_another_runtime_is_read_again(
    storage: Storage, open_storage_again: Reopen
) -> None:
    """Runtime A knows t's mark for s; runtime B applies a message from s at t; A's next
    message from s must neither be refused as applied nor wait for one that never comes."""
    first = _runtime(storage)
    second = _runtime(await open_storage_again())
    async with first, second:
        await first.invoke(acct("s"), "transfer", _transfer("a1"))

        async def at(rt: Runtime, balance: int) -> bool:
            return bool(await _balance(rt, "t") == balance)

        await settle(lambda: at(first, 1))  # A's activation of t knows mark 1
        await second.invoke(acct("s"), "transfer", _transfer("b2"))
        await settle(lambda: at(second, 2))  # B moved the stored mark to 2
        await first.invoke(acct("s"), "transfer", _transfer("a3"))  # s reloads in A: seq 3
        await settle(lambda: at(first, 3), within=20.0)
        state = await first.invoke(acct("t"), "state")
        assert state["log"] == ["a1", "b2", "a3"]
        assert await _balance(first, "s") == -3
