"""Several runtimes on one store: leases route callers, fencing keeps data safe."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from kelpie import (
    ActorActiveElsewhereError,
    ActorId,
    Runtime,
    Storage,
    TransactionConflictError,
)
from kelpie.actor.keys import user_key
from kelpie.runtime.lease import stored_lease
from kelpie.storage.protocol import Transaction
from kelpie.storage.wrapper import StorageWrapper, TransactionWrapper
from tests.runtime.conftest import register_all

Reopen = Callable[[], Awaitable[Storage]]


async def test_a_live_nodes_lease_sends_callers_to_it_until_released(
    storage: Storage, open_storage_again: Reopen
) -> None:
    one = register_all(Runtime(storage, node_id="node-1"))
    two = register_all(Runtime(await open_storage_again(), node_id="node-2"))
    actor = ActorId("account", "leased")
    try:
        assert await one.invoke(actor, "deposit", {"amount": 1}) == 1
        with pytest.raises(ActorActiveElsewhereError) as caught:
            await two.invoke(actor, "deposit", {"amount": 10})
        assert caught.value.owner == "node-1"
        await one.deactivate(actor)  # releases the lease
        assert await two.invoke(actor, "deposit", {"amount": 10}) == 11
        with pytest.raises(ActorActiveElsewhereError) as caught:
            await one.invoke(actor, "deposit", {"amount": 100})
        assert caught.value.owner == "node-2"
    finally:
        await one.close()
        await two.close()


async def test_a_renewing_owner_keeps_its_lease(
    storage: Storage, open_storage_again: Reopen
) -> None:
    one = register_all(Runtime(storage, node_id="node-1", lease_seconds=0.2))
    two = register_all(Runtime(await open_storage_again(), node_id="node-2", lease_seconds=0.2))
    actor = ActorId("account", "renewed")
    try:
        await one.invoke(actor, "deposit", {"amount": 1})
        for _ in range(8):  # 0.8 s: four lease lengths
            with pytest.raises(ActorActiveElsewhereError):
                await two.invoke(actor, "balance")
            await asyncio.sleep(0.1)
    finally:
        await one.close()
        await two.close()


async def test_an_expired_lease_is_taken_over_and_the_zombie_cannot_commit(
    storage: Storage, open_storage_again: Reopen
) -> None:
    zombie = register_all(Runtime(storage, node_id="node-1", lease_seconds=0.2))
    heir = register_all(Runtime(await open_storage_again(), node_id="node-2", lease_seconds=0.2))
    actor = ActorId("account", "zombie")
    try:
        assert await zombie.invoke(actor, "deposit", {"amount": 1}) == 1
        assert zombie._sweeper is not None
        zombie._sweeper.cancel()  # node-1 stalls: it stops renewing
        with pytest.raises(ActorActiveElsewhereError):
            await heir.invoke(actor, "deposit", {"amount": 10})
        await asyncio.sleep(0.3)
        assert await heir.invoke(actor, "deposit", {"amount": 10}) == 11
        # node-1 wakes with its old activation: its commit is fenced out...
        with pytest.raises(TransactionConflictError):
            await zombie.invoke(actor, "deposit", {"amount": 100})
        # ...and after reloading it sees who holds the actor now.
        with pytest.raises(ActorActiveElsewhereError) as caught:
            await zombie.invoke(actor, "deposit", {"amount": 100})
        assert caught.value.owner == "node-2"
        assert await storage.get(actor, user_key(b"balance")) == b"11"
    finally:
        await zombie.close()
        await heir.close()


async def test_a_runtime_without_node_id_ignores_leases_but_is_still_fenced(
    storage: Storage, open_storage_again: Reopen
) -> None:
    leased = register_all(Runtime(storage, node_id="node-1"))
    plain = register_all(Runtime(await open_storage_again()))
    actor = ActorId("account", "mixed")
    try:
        await leased.invoke(actor, "deposit", {"amount": 1})
        assert await plain.invoke(actor, "deposit", {"amount": 10}) == 11
        with pytest.raises(TransactionConflictError):
            await leased.invoke(actor, "deposit", {"amount": 100})
        assert await leased.invoke(actor, "deposit", {"amount": 100}) == 111
    finally:
        await leased.close()
        await plain.close()


class _RenewalFirst(StorageWrapper):
    """node-2's store: once armed, the owner's renewal lands just before node-2's next commit."""

    def __init__(self, inner: Storage, renew: Callable[[], Awaitable[None]]) -> None:
        super().__init__(inner)
        self.renew = renew
        self.armed = False

    def transaction(self, actor: ActorId) -> Transaction:
        store = self

        class RenewalFirst(TransactionWrapper):
            async def commit(self) -> None:
                if store.armed:
                    store.armed = False
                    await store.renew()
                await super().commit()

        return RenewalFirst(self.inner.transaction(actor))


async def test_a_takeover_that_loses_the_race_to_a_late_renewal_names_the_live_owner(
    storage: Storage, open_storage_again: Reopen
) -> None:
    """The owner's renewal comes late (its loop was busy) and lands between the read that
    found its lease expired and the commit that takes it: the caller hears who holds the
    actor (``ActorActiveElsewhereError``), not a bare conflict, and the owner keeps it."""
    one = register_all(Runtime(storage, node_id="node-1", lease_seconds=0.2))
    actor = ActorId("account", "late-renewal")

    async def renewal() -> None:
        before = await stored_lease(storage, actor)
        one._mailboxes[actor].renew()
        while await stored_lease(storage, actor) == before:  # noqa: ASYNC110 (storage)
            await asyncio.sleep(0.005)

    racing = _RenewalFirst(await open_storage_again(), renewal)
    two = register_all(Runtime(racing, node_id="node-2", lease_seconds=0.2))
    try:
        assert await one.invoke(actor, "deposit", {"amount": 1}) == 1
        assert one._sweeper is not None
        one._sweeper.cancel()  # node-1's renewals stall...
        with pytest.raises(ActorActiveElsewhereError):
            await two.invoke(actor, "balance")  # node-2 starts watching the lease
        await asyncio.sleep(0.3)  # ...longer than the lease
        racing.armed = True  # ...and the late one lands as node-2 takes over
        with pytest.raises(ActorActiveElsewhereError) as caught:
            await two.invoke(actor, "balance")
        assert caught.value.owner == "node-1"
        assert isinstance(caught.value.__cause__, TransactionConflictError)
        assert await stored_lease(storage, actor) == ("node-1", 3)  # deposit, renewal
        assert await one.invoke(actor, "deposit", {"amount": 1}) == 2
    finally:
        await one.close()
        await two.close()
