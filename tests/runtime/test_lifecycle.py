"""Activation, fencing between runtimes, restart, corrupt state, deactivation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from kelpie import (
    ActorId,
    CorruptStateError,
    Runtime,
    RuntimeClosedError,
    Storage,
    TransactionConflictError,
    UnknownActorTypeError,
    UnknownOperationError,
)
from kelpie.actor.keys import STATE_KEY, user_key
from tests.runtime.conftest import register_all

Reopen = Callable[[], Awaitable[Storage]]


async def test_second_runtime_commit_conflicts_then_reloads_and_loses_no_update(
    storage: Storage, open_storage_again: Reopen
) -> None:
    other_storage = await open_storage_again()
    first = register_all(Runtime(storage))
    second = register_all(Runtime(other_storage))
    actor = ActorId("account", "shared")
    try:
        assert await first.invoke(actor, "deposit", {"amount": 1}) == 1
        assert await second.invoke(actor, "deposit", {"amount": 10}) == 11
        # first still holds balance 1 in memory: its commit is fenced out.
        with pytest.raises(TransactionConflictError):
            await first.invoke(actor, "deposit", {"amount": 100})
        # ...and it reloaded: the retry builds on second's update.
        assert await first.invoke(actor, "deposit", {"amount": 100}) == 111
        with pytest.raises(TransactionConflictError):
            await second.invoke(actor, "deposit", {"amount": 1000})
        assert await second.invoke(actor, "deposit", {"amount": 1000}) == 1111
        assert await storage.get(actor, user_key(b"balance")) == b"1111"
    finally:
        await first.close()
        await second.close()


async def test_restart_on_reopened_storage_keeps_state_and_kv(
    storage: Storage, open_storage_again: Reopen
) -> None:
    actor = ActorId("kv", "restart")
    account = ActorId("account", "restart")
    runtime = register_all(Runtime(storage))
    await runtime.invoke(actor, "put", {"x": "1", "y": "2"})
    await runtime.invoke(account, "deposit", {"amount": 9})
    await runtime.close()
    await storage.close()

    reopened = await open_storage_again()
    runtime = register_all(Runtime(reopened))
    try:
        assert await runtime.invoke(actor, "keys", "") == ["x", "y"]
        assert await runtime.invoke(account, "balance") == 9
        assert await runtime.invoke(account, "kv_balance") == "9"
    finally:
        await runtime.close()


async def test_corrupt_state_raises_naming_the_actor_and_is_never_reset(
    storage: Storage, runtime: Runtime
) -> None:
    broken = ActorId("account", "broken")
    healthy = ActorId("account", "healthy")
    garbage = b"\x00not a state record"
    await storage.set(broken, STATE_KEY, garbage)
    for _ in range(2):
        with pytest.raises(CorruptStateError, match="account/broken"):
            await runtime.invoke(broken, "deposit", {"amount": 1})
    assert await storage.get(broken, STATE_KEY) == garbage
    assert await runtime.invoke(healthy, "deposit", {"amount": 1}) == 1


async def test_state_that_does_not_fit_the_state_type_is_corrupt(
    storage: Storage, runtime: Runtime
) -> None:
    from kelpie.actor.codec import StateRecord

    actor = ActorId("account", "wrong-shape")
    record = StateRecord(1, 0, "json", b'{"no_such_field": 1}')
    await storage.set(actor, STATE_KEY, record.encode())
    with pytest.raises(CorruptStateError, match="account/wrong-shape"):
        await runtime.invoke(actor, "balance")


async def test_unknown_namespace_and_operations_are_named_errors(runtime: Runtime) -> None:
    with pytest.raises(UnknownActorTypeError):
        await runtime.invoke(ActorId("nobody", "x"), "deposit", {"amount": 1})
    actor = ActorId("account", "ops")
    for operation in ("no_such_op", "_private", "on_activate", "on_deactivate", "__init__"):
        with pytest.raises(UnknownOperationError):
            await runtime.invoke(actor, operation, None)
    assert runtime.active_actors == []


async def test_on_deactivate_commits_through_a_transaction(
    storage: Storage, runtime: Runtime
) -> None:
    actor = ActorId("life", "a")
    assert await runtime.invoke(actor, "get") == {"activations": 1, "deactivations": 0}
    await runtime.deactivate(actor)
    assert runtime.active_actors == []
    assert await storage.get(actor, user_key(b"goodbye")) == b"1"
    assert await runtime.invoke(actor, "get") == {"activations": 2, "deactivations": 1}


async def test_idle_actors_are_deactivated_after_idle_timeout(storage: Storage) -> None:
    runtime = register_all(Runtime(storage, idle_timeout=0.05))
    actor = ActorId("life", "idle")
    try:
        await runtime.invoke(actor, "get")
        assert runtime.active_actors == [actor]
        for _ in range(200):
            if not runtime.active_actors:
                break
            await asyncio.sleep(0.01)
        assert runtime.active_actors == []
        assert await runtime.invoke(actor, "get") == {"activations": 2, "deactivations": 1}
    finally:
        await runtime.close()


async def test_close_drains_in_flight_work_then_refuses_new_invocations(
    storage: Storage,
) -> None:
    runtime = register_all(Runtime(storage))
    actor = ActorId("account", "drain")
    calls = [
        asyncio.create_task(runtime.invoke(actor, "deposit", {"amount": 1})) for _ in range(20)
    ]
    await asyncio.sleep(0)
    await runtime.close()
    assert sorted(await asyncio.gather(*calls)) == list(range(1, 21))
    assert await storage.get(actor, user_key(b"balance")) == b"20"
    with pytest.raises(RuntimeClosedError):
        await runtime.invoke(actor, "deposit", {"amount": 1})
    await runtime.close()  # idempotent
