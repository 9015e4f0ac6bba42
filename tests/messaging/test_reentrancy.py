"""A handler that awaits runtime.invoke on its own actor gets ReentrantCallError at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from kelpie import Actor, ActorContext, ActorId, ReentrantCallError, Runtime, Storage
from tests.messaging.conftest import on_backends

RUNTIME: dict[str, Runtime] = {}


@dataclass
class Counter:
    n: int = 0


class Caller(Actor[Counter]):
    state_type = Counter

    async def bump(self, ctx: ActorContext[Counter], payload: None) -> int:
        ctx.state.n += 1
        return ctx.state.n

    async def call(self, ctx: ActorContext[Counter], payload: dict[str, Any]) -> Any:
        target = ActorId(payload["ns"], payload["id"])
        ctx.state.n += 100
        return await RUNTIME["rt"].invoke(target, "bump")

    async def call_in_task(self, ctx: ActorContext[Counter], payload: None) -> Any:
        task = asyncio.get_running_loop().create_task(RUNTIME["rt"].invoke(ctx.actor_id, "bump"))
        return await task

    async def on_activate(self, ctx: ActorContext[Counter]) -> None:
        if ctx.actor_id.id == "hook":
            await RUNTIME["rt"].invoke(ctx.actor_id, "bump")


@on_backends
async def test_self_invoke_raises_reentrant_call_error_at_once(storage: Storage) -> None:
    async with Runtime(storage, invocation_timeout=30.0) as rt:
        RUNTIME["rt"] = rt
        rt.register("c", Caller)
        me = ActorId("c", "me")
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await rt.invoke(me, "call", {"ns": "c", "id": "me"})
        except ReentrantCallError as exc:
            assert "c/me" in str(exc) or "me" in str(exc)
        else:
            raise AssertionError("a self-invoke did not raise")
        assert loop.time() - started < 5.0  # at once, not after the 30 s timeout
        # The failed handler stored nothing; the actor still works.
        assert await rt.invoke(me, "bump") == 1
        # A task started by the handler is still the handler's: refused too.
        try:
            await rt.invoke(me, "call_in_task")
        except ReentrantCallError:
            pass
        else:
            raise AssertionError("a self-invoke from a handler's task did not raise")


@on_backends
async def test_invoking_another_actor_from_a_handler_works(storage: Storage) -> None:
    async with Runtime(storage) as rt:
        RUNTIME["rt"] = rt
        rt.register("c", Caller)
        assert await rt.invoke(ActorId("c", "a"), "call", {"ns": "c", "id": "b"}) == 1
        assert await rt.invoke(ActorId("c", "a"), "bump") == 101


@on_backends
async def test_self_invoke_from_on_activate_raises(storage: Storage) -> None:
    async with Runtime(storage, invocation_timeout=30.0) as rt:
        RUNTIME["rt"] = rt
        rt.register("c", Caller)
        try:
            await asyncio.wait_for(rt.invoke(ActorId("c", "hook"), "bump"), 5.0)
        except ReentrantCallError:
            pass
        else:
            raise AssertionError("a self-invoke from on_activate did not raise")
