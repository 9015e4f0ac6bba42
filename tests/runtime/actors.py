"""Actors the runtime tests use."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from kelpie import Actor, ActorContext


@dataclass
class Account:
    balance: int = 0
    last_txn: str = ""
    history: list[int] = field(default_factory=list)


class BankAccount(Actor[Account]):
    """The seed scenario's account: every deposit moves state and KV together."""

    state_type = Account

    async def deposit(self, ctx: ActorContext[Account], payload: dict[str, Any]) -> int:
        ctx.state.balance += payload["amount"]
        ctx.state.last_txn = payload.get("txn", "")
        await ctx.kv_set(b"balance", str(ctx.state.balance).encode())
        return ctx.state.balance

    async def deposit_then_fail(self, ctx: ActorContext[Account], payload: dict[str, Any]) -> int:
        await self.deposit(ctx, payload)
        raise ValueError("handler failed after writing")

    async def record(self, ctx: ActorContext[Account], payload: int) -> list[int]:
        ctx.state.history.append(payload)
        await asyncio.sleep(0)
        return list(ctx.state.history)

    async def balance(self, ctx: ActorContext[Account], payload: None) -> int:
        return ctx.state.balance

    async def kv_balance(self, ctx: ActorContext[Account], payload: None) -> str | None:
        raw = await ctx.kv_get(b"balance")
        return None if raw is None else raw.decode()

    async def slow(self, ctx: ActorContext[Account], payload: float) -> None:
        ctx.state.balance += 1
        await ctx.kv_set(b"slow", b"1")
        await asyncio.sleep(payload)

    async def wait_for(self, ctx: ActorContext[Account], payload: None) -> str:
        await EVENTS.wait_for(ctx.actor_id.id)
        return "released"

    async def release(self, ctx: ActorContext[Account], payload: str) -> None:
        EVENTS.release(payload)

    async def bad_result(self, ctx: ActorContext[Account], payload: None) -> object:
        ctx.state.balance += 1
        await ctx.kv_set(b"balance", b"999")
        return object()

    async def tuple_result(self, ctx: ActorContext[Account], payload: None) -> tuple[int, int]:
        ctx.state.balance += 1
        return (1, 2)

    async def _private(self, ctx: ActorContext[Account], payload: None) -> None:
        raise AssertionError("private handlers are never invoked")


class _Events:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def _event(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())

    async def wait_for(self, name: str) -> None:
        await self._event(name).wait()

    def release(self, name: str) -> None:
        self._event(name).set()

    def reset(self) -> None:
        self._events.clear()


EVENTS = _Events()


class KeyValueActor(Actor[dict[str, Any]]):
    """A dict-state actor exercising every kv_* call."""

    async def put(self, ctx: ActorContext[dict[str, Any]], payload: dict[str, str]) -> None:
        for key, value in payload.items():
            await ctx.kv_set(key.encode(), value.encode())
        ctx.state["puts"] = ctx.state.get("puts", 0) + 1

    async def remove(self, ctx: ActorContext[dict[str, Any]], payload: str) -> None:
        await ctx.kv_delete(payload.encode())

    async def keys(self, ctx: ActorContext[dict[str, Any]], payload: str) -> list[str]:
        return [key.decode() for key in await ctx.kv_list_keys(payload.encode())]

    async def read_own_writes(self, ctx: ActorContext[dict[str, Any]], payload: None) -> Any:
        await ctx.kv_set(b"a", b"1")
        await ctx.kv_set(b"b", b"2")
        await ctx.kv_delete(b"a")
        await ctx.kv_set(b"c", b"3")
        return {
            "a": await ctx.kv_exists(b"a"),
            "b": (await ctx.kv_get(b"b") or b"").decode(),
            "keys": [key.decode() for key in await ctx.kv_list_keys()],
        }

    async def set_key(self, ctx: ActorContext[dict[str, Any]], payload: list[int]) -> None:
        await ctx.kv_set(bytes(payload), b"v")


@dataclass
class Lifecycle:
    activations: int = 0
    deactivations: int = 0


class LifecycleActor(Actor[Lifecycle]):
    state_type = Lifecycle

    async def on_activate(self, ctx: ActorContext[Lifecycle]) -> None:
        ctx.state.activations += 1

    async def on_deactivate(self, ctx: ActorContext[Lifecycle]) -> None:
        ctx.state.deactivations += 1
        await ctx.kv_set(b"goodbye", str(ctx.state.deactivations).encode())

    async def get(self, ctx: ActorContext[Lifecycle], payload: None) -> dict[str, int]:
        return {"activations": ctx.state.activations, "deactivations": ctx.state.deactivations}
