"""Transfers: accounts move money only by ``debit`` -> ``ctx.send(credit)``, plus interest.

Each client step either transfers between two accounts (one keyed ``debit``
invocation of the source; the credit reaches the destination only as a
message from the debit's commit) or opens an interest reminder on an account
(``set_reminder`` with a unique name; when it fires it adds 1). Every account
records in its state the transfer ids it sent, the ones it received and the
reminders it set and fired, so the checks need nothing from the clients:

- at quiescence (faults off, one fresh process, every outbox empty and no
  reminder left) the total equals the initial money plus the interest fired;
- every transfer sent is received exactly once (none lost, none doubled, none
  received that was never sent);
- every reminder set fired exactly once, and none fired that was not set;
- balances never go negative.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kelpie.actor.actor import Actor
from kelpie.actor.context import ActorContext
from kelpie.dst.harness import Simulation, WorkloadBase
from kelpie.identity import ActorId
from kelpie.messaging import records

__all__ = ["TransferAccount", "TransferState", "TransfersWorkload"]

INITIAL = 1000
NAMESPACE = "xfer"


@dataclass
class TransferState:
    balance: int = INITIAL
    sent: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    reminders: list[str] = field(default_factory=list)
    interest: list[str] = field(default_factory=list)


class InsufficientFundsError(Exception):
    """The source cannot pay: rejected, nothing stored or sent."""


class TransferAccount(Actor[TransferState]):
    state_type = TransferState

    async def debit(self, ctx: ActorContext[TransferState], payload: dict[str, Any]) -> int:
        amount = int(payload["amount"])
        if amount > ctx.state.balance:
            raise InsufficientFundsError(f"balance {ctx.state.balance} < {amount}")
        ctx.state.balance -= amount
        ctx.state.sent.append(payload["id"])
        target = ActorId(ctx.actor_id.namespace, payload["to"])
        ctx.send(target, "credit", {"id": payload["id"], "amount": amount})
        return ctx.state.balance

    async def credit(self, ctx: ActorContext[TransferState], payload: dict[str, Any]) -> None:
        ctx.state.balance += int(payload["amount"])
        ctx.state.received.append(payload["id"])

    async def open_interest(
        self, ctx: ActorContext[TransferState], payload: dict[str, Any]
    ) -> None:
        name = payload["id"]
        ctx.state.reminders.append(name)
        ctx.set_reminder(name, after=payload["after"], operation="interest", payload=name)

    async def interest(self, ctx: ActorContext[TransferState], payload: str) -> None:
        ctx.state.balance += 1
        ctx.state.interest.append(payload)


class TransfersWorkload(WorkloadBase):
    """Clients transfer between a few accounts and open interest reminders."""

    name = "transfers"
    required_paths: ClassVar[tuple[str, ...]] = ()

    def __init__(self, accounts: int = 4, settle_seconds: float = 600.0) -> None:
        self.accounts = accounts
        self.settle_seconds = settle_seconds
        self._ids: list[ActorId] = []
        self._counters: dict[int, int] = {}

    async def setup(self, sim: Simulation) -> None:
        sim.register(NAMESPACE, TransferAccount)
        self._ids = [sim.actor(NAMESPACE, f"acct{i}") for i in range(self.accounts)]

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
        n = self._counters[client] = self._counters.get(client, 0) + 1
        source = rng.choice(self._ids)
        op_id = f"c{client}.{n}"
        if rng.random() < 0.2:
            payload = {"id": op_id, "after": rng.uniform(0.1, 3.0)}
            await sim.call(source, "open_interest", payload, key=op_id, rng=rng)
            return
        target = rng.choice(self._ids)  # sometimes the source itself: a message to oneself
        payload = {"id": op_id, "to": target.id, "amount": rng.randint(1, 200)}
        await sim.call(source, "debit", payload, key=op_id, rng=rng)

    async def _pending(self, sim: Simulation) -> int:
        """Outbox entries and reminders still stored, over every account."""
        left = 0
        for actor in self._ids:
            left += len(await sim.storage.list_keys(actor, records.OUTBOX))
            left += len(await sim.storage.list_keys(actor, records.REMINDER))
        return left

    async def check(self, sim: Simulation) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_seconds
        while await self._pending(sim) and loop.time() < deadline:  # noqa: ASYNC110 (storage)
            await asyncio.sleep(1.0)
        left = await self._pending(sim)
        if left:
            sim.violation(
                f"{left} outbox entries or reminders still pending {self.settle_seconds} s "
                "after the clients stopped (messages or reminders stuck)"
            )
        states: list[TransferState] = []
        for actor in self._ids:
            state = await sim.state(actor, TransferState)
            states.append(TransferState() if state is None else state)
        sent = Counter(x for s in states for x in s.sent)
        received = Counter(x for s in states for x in s.received)
        set_ = Counter(x for s in states for x in s.reminders)
        fired = Counter(x for s in states for x in s.interest)
        for name, what in ((sent, "sent"), (set_, "set")):
            doubled = sorted(k for k, v in name.items() if v > 1)
            if doubled:
                sim.violation(f"transfers {what} twice by one debit: {doubled[:5]}")
        twice = sorted(k for k, v in received.items() if v > 1)
        if twice:
            sim.violation(f"messages applied twice: {twice[:5]}")
        lost = sorted(set(sent) - set(received))
        if lost and not left:
            sim.violation(f"messages lost (sent, never applied): {lost[:5]}")
        phantom = sorted(set(received) - set(sent))
        if phantom:
            sim.violation(f"messages applied that no committed debit sent: {phantom[:5]}")
        again = sorted(k for k, v in fired.items() if v > 1)
        if again:
            sim.violation(f"reminders fired twice for one due time: {again[:5]}")
        missing = sorted(set(set_) - set(fired))
        if missing and not left:
            sim.violation(f"reminders never fired: {missing[:5]}")
        unset = sorted(set(fired) - set(set_))
        if unset:
            sim.violation(f"reminders fired that no committed invocation set: {unset[:5]}")
        total = sum(s.balance for s in states)
        expected = INITIAL * len(states) + sum(fired.values())
        if total != expected:
            sim.violation(f"money not conserved: total {total}, expected {expected}")
        for actor, state in zip(self._ids, states, strict=True):
            if state.balance < 0:
                sim.violation(f"{actor}: negative balance {state.balance}")
        sim.count("transfers_sent", len(sent))
        sim.count("transfers_received", sum(received.values()))
        sim.count("reminders_fired", sum(fired.values()))
