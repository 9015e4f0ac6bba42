"""Every invocation sees one committed version of its actor, and one runs at a time.

Two holes found from outside (issue 13), each reproduced on every backend:

1. A deactivation hand-over: an invocation arriving while the old activation
   still drained its queue got a new activation that ran at the same time.
2. Torn reads: a read-only invocation was aborted rather than validated, so
   with two runtimes on one store it could return state from one commit and
   KV from the next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from kelpie import Actor, ActorContext, Runtime, Storage, TransactionConflictError
from kelpie.testing.plugin import ActorFactory


@dataclass
class Value:
    value: int = 0


class Register(Actor[Value]):
    """State and KV ``v`` always hold the same number."""

    state_type = Value

    async def write(self, ctx: ActorContext[Value], payload: int) -> int:
        ctx.state.value = payload
        await ctx.kv_set(b"v", str(payload).encode())
        return payload

    async def peek(self, ctx: ActorContext[Value], payload: float) -> list[int | None]:
        state = ctx.state.value
        await asyncio.sleep(payload)
        raw = await ctx.kv_get(b"v")
        return [state, None if raw is None else int(raw)]

    async def state_only(self, ctx: ActorContext[Value], payload: float) -> int:
        await asyncio.sleep(payload)
        return ctx.state.value


Reopen = Callable[[], Awaitable[Storage]]


@contextlib.asynccontextmanager
async def _two_runtimes(
    storage: Storage, open_storage_again: Reopen
) -> AsyncIterator[tuple[Runtime, Runtime]]:
    """Two runtimes without node ids on one store (each its own storage handle)."""
    first = _runtime(storage)
    second = _runtime(await open_storage_again())
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def _runtime(storage: Storage, **options: Any) -> Runtime:
    runtime = Runtime(storage, **options)
    runtime.register("register", Register)
    return runtime


async def test_an_invocation_after_deactivate_waits_for_the_queued_ones(
    storage: Storage, new_actor: ActorFactory
) -> None:
    actor = new_actor("r", namespace="register")
    async with _runtime(storage) as runtime:
        assert await runtime.invoke(actor, "write", 1) == 1
        peek = asyncio.create_task(runtime.invoke(actor, "peek", 0.2))
        await asyncio.sleep(0.01)  # peek is running
        deactivating = asyncio.create_task(runtime.deactivate(actor))
        await asyncio.sleep(0.01)  # the stop is queued behind peek
        write = asyncio.create_task(runtime.invoke(actor, "write", 2))
        assert await peek == [1, 1]  # never [1, 2]: the write waits for the old activation
        assert await write == 2
        await deactivating
        assert await runtime.invoke(actor, "peek", 0.0) == [2, 2]


async def test_invocations_across_a_hand_over_run_one_at_a_time_in_arrival_order(
    storage: Storage, new_actor: ActorFactory
) -> None:
    actor = new_actor("r", namespace="register")
    async with _runtime(storage) as runtime:
        order: list[str] = []

        async def call(name: str, operation: str, payload: Any) -> Any:
            result = await runtime.invoke(actor, operation, payload)
            order.append(name)
            return result

        first = asyncio.create_task(call("peek1", "peek", 0.1))
        second = asyncio.create_task(call("peek2", "peek", 0.1))
        await asyncio.sleep(0.01)
        stops = [asyncio.create_task(runtime.deactivate(actor)) for _ in range(2)]
        await asyncio.sleep(0.01)
        third = asyncio.create_task(call("write", "write", 5))
        await asyncio.sleep(0.01)
        fourth = asyncio.create_task(call("peek3", "peek", 0.0))
        results = await asyncio.gather(first, second, third, fourth, *stops)
        assert results[:4] == [[0, None], [0, None], 5, [5, 5]]
        assert order == ["peek1", "peek2", "write", "peek3"]


async def test_idle_eviction_then_a_new_call_sees_the_last_commit(
    storage: Storage, new_actor: ActorFactory
) -> None:
    actor = new_actor("r", namespace="register")
    async with _runtime(storage, idle_timeout=0.05) as runtime:
        assert await runtime.invoke(actor, "write", 7) == 7
        for _ in range(100):
            if not runtime.active_actors:
                break
            await asyncio.sleep(0.02)
        assert runtime.active_actors == []
        assert await runtime.invoke(actor, "peek", 0.0) == [7, 7]


async def test_a_read_only_invocation_never_returns_a_torn_view_across_runtimes(
    storage: Storage, open_storage_again: Reopen, new_actor: ActorFactory
) -> None:
    actor = new_actor("r", namespace="register")
    async with _two_runtimes(storage, open_storage_again) as (first, second):
        assert await first.invoke(actor, "write", 1) == 1
        peek = asyncio.create_task(first.invoke(actor, "peek", 0.2))
        await asyncio.sleep(0.05)  # peek has read the state (1), now sleeps
        assert await second.invoke(actor, "write", 2) == 2  # state and KV become 2
        # [1, 2] never existed: the read-only invocation must not succeed with it.
        with pytest.raises(TransactionConflictError):
            await peek
        # The activation reloaded: the retry sees the one version there is.
        assert await first.invoke(actor, "peek", 0.0) == [2, 2]


async def test_a_read_only_invocation_without_interference_commits_nothing(
    storage: Storage, open_storage_again: Reopen, new_actor: ActorFactory
) -> None:
    actor = new_actor("r", namespace="register")
    async with _two_runtimes(storage, open_storage_again) as (first, second):
        assert await first.invoke(actor, "write", 3) == 3
        assert await second.invoke(actor, "peek", 0.0) == [3, 3]
        # second's peek wrote nothing, so first's activation is still current.
        assert await first.invoke(actor, "write", 4) == 4
        # second's activation is now stale: its fence says so, and it reloads.
        with pytest.raises(TransactionConflictError):
            await second.invoke(actor, "peek", 0.0)
        assert await second.invoke(actor, "peek", 0.0) == [4, 4]


async def test_a_state_only_read_is_one_version_and_needs_no_validation(
    storage: Storage, open_storage_again: Reopen, new_actor: ActorFactory
) -> None:
    actor = new_actor("r", namespace="register")
    async with _two_runtimes(storage, open_storage_again) as (first, second):
        assert await first.invoke(actor, "write", 1) == 1
        slow = asyncio.create_task(first.invoke(actor, "state_only", 0.5))
        await asyncio.sleep(0.2)  # its fence read is long done: it sleeps
        assert await second.invoke(actor, "write", 2) == 2
        # Everything it returned came from the version the fence read: linearizable.
        assert await slow == 1


class FailsToDeactivate(Register):
    async def on_deactivate(self, ctx: ActorContext[Value]) -> None:
        raise RuntimeError("on_deactivate failed")


async def test_a_failed_idle_eviction_is_logged_not_left_unretrieved(
    storage: Storage, new_actor: ActorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    actor = new_actor("r", namespace="fails")
    async with Runtime(storage, idle_timeout=0.05) as runtime:
        runtime.register("fails", FailsToDeactivate)
        assert await runtime.invoke(actor, "write", 1) == 1

        def logged() -> bool:
            return any("idle deactivation failed" in r.getMessage() for r in caplog.records)

        # The actor leaves the map before its failed stop is logged (after the
        # storage's reply): wait for both, a loaded machine may take a while.
        for _ in range(500):
            if not runtime.active_actors and logged():
                break
            await asyncio.sleep(0.02)
        assert runtime.active_actors == []
        assert logged()
        assert await runtime.invoke(actor, "peek", 0.0) == [1, 1]
