"""Actors the messaging tests use."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from kelpie import Actor, ActorContext, ActorId


@dataclass
class Ledger:
    balance: int = 0
    log: list[str] = field(default_factory=list)
    fired: list[float] = field(default_factory=list)


def acct(name: str) -> ActorId:
    return ActorId("acct", name)


class Account(Actor[Ledger]):
    state_type = Ledger

    async def deposit(self, ctx: ActorContext[Ledger], payload: int) -> int:
        ctx.state.balance += payload
        return ctx.state.balance

    async def credit(self, ctx: ActorContext[Ledger], payload: dict[str, Any]) -> None:
        ctx.state.balance += payload["amount"]
        ctx.state.log.append(payload["note"])

    async def transfer(self, ctx: ActorContext[Ledger], payload: dict[str, Any]) -> int:
        ctx.state.balance -= payload["amount"]
        ctx.send(
            acct(payload["to"]), "credit", {"amount": payload["amount"], "note": payload["note"]}
        )
        return ctx.state.balance

    async def transfer_then_fail(self, ctx: ActorContext[Ledger], payload: dict[str, Any]) -> None:
        await self.transfer(ctx, payload)
        raise ValueError("the handler failed after sending")

    async def many(self, ctx: ActorContext[Ledger], payload: dict[str, Any]) -> None:
        for n in range(payload["count"]):
            ctx.send(acct(payload["to"]), "credit", {"amount": 1, "note": f"{payload['tag']}{n}"})

    async def poison(self, ctx: ActorContext[Ledger], payload: Any) -> None:
        ctx.state.balance += 1000
        raise RuntimeError("poisoned message")

    async def send_poison(self, ctx: ActorContext[Ledger], payload: str) -> None:
        ctx.send(acct(payload), "poison", {"why": "test"})
        ctx.send(acct(payload), "credit", {"amount": 1, "note": "after-poison"})

    async def state(self, ctx: ActorContext[Ledger], payload: None) -> dict[str, Any]:
        return {"balance": ctx.state.balance, "log": ctx.state.log, "fired": ctx.state.fired}

    async def remind(self, ctx: ActorContext[Ledger], payload: dict[str, Any]) -> None:
        ctx.set_reminder(
            payload["name"],
            after=payload["after"],
            operation="tick",
            payload=payload.get("payload"),
            every=payload.get("every"),
        )

    async def cancel(self, ctx: ActorContext[Ledger], payload: str) -> None:
        ctx.cancel_reminder(payload)

    async def tick(self, ctx: ActorContext[Ledger], payload: Any) -> None:
        ctx.state.fired.append(asyncio.get_running_loop().time())
        if payload is not None:
            ctx.state.balance += int(payload)


async def settle(check: Any, *, within: float = 10.0) -> None:
    """Wait (loop time) until ``await check()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not settled within {within} s")
        await asyncio.sleep(0.02)
