"""``Runtime.delete_actor``: deactivate, respect leases, delete every record, start afresh.

Runs on every backend of the ``storage`` fixture (memory, Redis, LMDB, SQLite, ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from kelpie import (
    Actor,
    ActorActiveElsewhereError,
    ActorContext,
    ActorId,
    Runtime,
    RuntimeClosedError,
    Storage,
    TransactionConflictError,
    UnsupportedOperationError,
)
from kelpie.actor.keys import STATE_KEY, user_key
from kelpie.storage.lifecycle import list_actors
from kelpie.storage.memory import MemoryStorage
from kelpie.storage.wrapper import StorageWrapper
from tests.runtime.actors import EVENTS, Account
from tests.runtime.conftest import register_all

Reopen = Callable[[], Awaitable[Storage]]


class SlowAccount(Actor[Account]):
    """Reads its state, waits to be released, then writes: a transaction held open."""

    state_type = Account

    async def slow_deposit(self, ctx: ActorContext[Account], payload: int) -> int:
        await EVENTS.wait_for(ctx.actor_id.id)
        ctx.state.balance += payload
        await ctx.kv_set(b"balance", str(ctx.state.balance).encode())
        return ctx.state.balance

    async def deposit(self, ctx: ActorContext[Account], payload: int) -> int:
        ctx.state.balance += payload
        return ctx.state.balance

    async def balance(self, ctx: ActorContext[Account], payload: None) -> int:
        return ctx.state.balance


async def test_delete_removes_every_record_and_the_next_call_starts_afresh(
    runtime: Runtime, storage: Storage
) -> None:
    actor = ActorId("account", "to-delete")
    other = ActorId("account", "to-keep")
    assert await runtime.invoke(actor, "deposit", {"amount": 5}, idempotency_key="k1") == 5
    assert await runtime.invoke(other, "deposit", {"amount": 7}) == 7
    assert await storage.list_keys(actor) != []

    await runtime.delete_actor(actor)

    assert actor not in runtime.active_actors
    assert await storage.list_keys(actor) == []
    assert actor not in await list_actors(storage, "account")
    assert await runtime.invoke(actor, "balance") == 0
    assert await runtime.invoke(actor, "kv_balance") is None
    # The idempotency record went too: the same key runs the deposit again.
    assert await runtime.invoke(actor, "deposit", {"amount": 5}, idempotency_key="k1") == 5
    assert await runtime.invoke(other, "balance") == 7  # nothing else touched


async def test_delete_of_an_actor_never_stored_is_a_no_op(
    runtime: Runtime, storage: Storage
) -> None:
    actor = ActorId("account", "never")
    await runtime.delete_actor(actor)
    await runtime.delete_actor(actor)
    assert await storage.list_keys(actor) == []
    assert await runtime.invoke(actor, "deposit", {"amount": 1}) == 1


async def test_calls_queued_before_the_delete_run_first_and_are_deleted(
    runtime: Runtime, storage: Storage
) -> None:
    actor = ActorId("account", "queued")
    EVENTS.reset()
    held = asyncio.ensure_future(runtime.invoke(actor, "wait_for"))
    queued = [
        asyncio.ensure_future(runtime.invoke(actor, "deposit", {"amount": n})) for n in (1, 2)
    ]
    await asyncio.sleep(0.05)
    deleting = asyncio.ensure_future(runtime.delete_actor(actor))
    await asyncio.sleep(0.05)
    # A call made after delete_actor was called waits for the delete.
    after = asyncio.ensure_future(runtime.invoke(actor, "deposit", {"amount": 100}))
    await asyncio.sleep(0.05)
    assert not deleting.done() and not after.done()
    EVENTS.release("queued")
    assert await held == "released"
    assert [await q for q in queued] == [1, 3]
    await deleting
    assert await after == 100  # fresh state: the first deposits were deleted
    assert await runtime.invoke(actor, "balance") == 100


async def test_on_deactivate_runs_before_the_delete(runtime: Runtime, storage: Storage) -> None:
    actor = ActorId("life", "hooks")
    assert await runtime.invoke(actor, "get") == {"activations": 1, "deactivations": 0}
    await runtime.delete_actor(actor)
    assert await storage.get(actor, user_key(b"goodbye")) is None  # its write went too
    assert await runtime.invoke(actor, "get") == {"activations": 1, "deactivations": 0}


async def test_a_handler_racing_a_delete_from_another_runtime_never_resurrects_old_state(
    storage: Storage, open_storage_again: Reopen
) -> None:
    """A transaction that read the actor before the delete cannot commit after it."""
    EVENTS.reset()
    one = Runtime(storage)
    two = Runtime(await open_storage_again())
    for runtime in (one, two):
        runtime.register("slow", SlowAccount)
    actor = ActorId("slow", "raced")
    try:
        assert await one.invoke(actor, "deposit", 10) == 10
        # The handler reads the state (the fence read), then waits mid-transaction.
        racing = asyncio.ensure_future(one.invoke(actor, "slow_deposit", 1000))
        await asyncio.sleep(0.05)
        await two.delete_actor(actor)
        assert await storage.list_keys(actor) == []
        EVENTS.release("raced")
        with pytest.raises(TransactionConflictError):
            await racing
        assert await storage.get(actor, STATE_KEY) is None  # nothing came back
        # runtime one reloads: the actor starts from the default state.
        assert await one.invoke(actor, "deposit", 1) == 1
        assert await two.invoke(actor, "balance") == 1
    finally:
        await one.close()
        await two.close()


async def test_a_stale_activation_elsewhere_reloads_fresh_after_a_delete(
    storage: Storage, open_storage_again: Reopen
) -> None:
    one = register_all(Runtime(storage))
    two = register_all(Runtime(await open_storage_again()))
    actor = ActorId("account", "stale")
    try:
        for _ in range(3):
            await one.invoke(actor, "deposit", {"amount": 10})
        await two.delete_actor(actor)
        # Re-created meanwhile with as many commits as before: still fenced out.
        for _ in range(3):
            await two.invoke(actor, "deposit", {"amount": 1})
        with pytest.raises(TransactionConflictError):
            await one.invoke(actor, "deposit", {"amount": 1000})
        assert await one.invoke(actor, "balance") == 3
    finally:
        await one.close()
        await two.close()


async def test_a_live_lease_elsewhere_refuses_the_delete(
    storage: Storage, open_storage_again: Reopen
) -> None:
    one = register_all(Runtime(storage, node_id="node-1", lease_seconds=0.3))
    two = register_all(Runtime(await open_storage_again(), node_id="node-2", lease_seconds=0.3))
    anonymous = register_all(Runtime(await open_storage_again(), lease_seconds=0.3))
    actor = ActorId("account", "leased")
    try:
        assert await one.invoke(actor, "deposit", {"amount": 1}) == 1
        for deleter in (two, anonymous):
            with pytest.raises(ActorActiveElsewhereError) as caught:
                await deleter.delete_actor(actor)
            assert caught.value.owner == "node-1"
        assert await one.invoke(actor, "balance") == 1  # nothing was deleted
        await asyncio.sleep(0.45)  # node-1 renews meanwhile: still refused
        with pytest.raises(ActorActiveElsewhereError):
            await two.delete_actor(actor)
        # The owner itself may delete: it deactivates (releasing the lease) first.
        await one.delete_actor(actor)
        assert await storage.list_keys(actor) == []
        assert await two.invoke(actor, "deposit", {"amount": 5}) == 5  # node-2 holds it now
        await two.deactivate(actor)
        await two.delete_actor(actor)  # released: deletes at once
        assert await storage.list_keys(actor) == []
    finally:
        await one.close()
        await two.close()
        await anonymous.close()


async def test_an_expired_lease_of_a_dead_node_lets_the_delete_through(
    storage: Storage, open_storage_again: Reopen
) -> None:
    dead = register_all(Runtime(storage, node_id="node-1", lease_seconds=0.2))
    two = register_all(Runtime(await open_storage_again(), node_id="node-2", lease_seconds=0.2))
    actor = ActorId("account", "orphan")
    try:
        await dead.invoke(actor, "deposit", {"amount": 3})
        assert dead._sweeper is not None
        dead._sweeper.cancel()  # node-1 stalls: it stops renewing
        with pytest.raises(ActorActiveElsewhereError):
            await two.delete_actor(actor)
        await asyncio.sleep(0.3)
        await two.delete_actor(actor)
        assert await storage.list_keys(actor) == []
        # The zombie's old activation is fenced out, then starts afresh.
        with pytest.raises(TransactionConflictError):
            await dead.invoke(actor, "deposit", {"amount": 100})
        assert await dead.invoke(actor, "balance") == 0
    finally:
        await dead.close()
        await two.close()


async def test_delete_after_close_and_bad_arguments(runtime: Runtime) -> None:
    with pytest.raises(TypeError):
        await runtime.delete_actor("account/x")  # type: ignore[arg-type]
    await runtime.close()
    with pytest.raises(RuntimeClosedError):
        await runtime.delete_actor(ActorId("account", "x"))


class _OldBackend:
    """A third-party backend written before ``delete_actor``: the protocol's old methods only."""

    def __init__(self) -> None:
        self._inner = MemoryStorage()

    async def get(self, actor: ActorId, key: bytes) -> bytes | None:
        return await self._inner.get(actor, key)

    def transaction(self, actor: ActorId) -> object:
        return self._inner.transaction(actor)

    async def close(self) -> None:
        await self._inner.close()


async def test_a_backend_without_delete_actor_is_named_and_nothing_is_deactivated() -> None:
    old = _OldBackend()
    runtime = register_all(Runtime(old))  # type: ignore[arg-type]
    actor = ActorId("account", "old")
    try:
        assert await runtime.invoke(actor, "deposit", {"amount": 2}) == 2
        with pytest.raises(UnsupportedOperationError, match=r"_OldBackend.*delete_actor"):
            await runtime.delete_actor(actor)
        assert runtime.active_actors == [actor]
        assert await runtime.invoke(actor, "balance") == 2
    finally:
        await runtime.close()
        await old.close()


async def test_a_wrapper_forwards_delete_actor(storage: Storage) -> None:
    runtime = register_all(Runtime(StorageWrapper(storage)))
    actor = ActorId("account", "wrapped")
    try:
        await runtime.invoke(actor, "deposit", {"amount": 2})
        await runtime.delete_actor(actor)
        assert await storage.list_keys(actor) == []
    finally:
        await runtime.close()
