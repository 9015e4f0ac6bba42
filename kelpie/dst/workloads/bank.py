"""The seed scenario: a bank account whose balance lives in its state *and* its KV.

``deposit`` and ``withdraw`` update ``state.balance`` and write the same number
under the KV key ``balance``. With one transaction per invocation the two can
never disagree; with the atomicity gap (``kelpie.dst.naive``) a failed state
commit leaves the KV write applied. The invariant is checked whenever an
account is quiet, and at the end together with the money the clients saw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from kelpie.actor.actor import Actor
from kelpie.actor.context import ActorContext
from kelpie.dst.harness import Simulation, WorkloadBase
from kelpie.dst.invariants import kv_matches_state
from kelpie.identity import ActorId

__all__ = ["Account", "BankAccount", "BankWorkload", "InsufficientFundsError"]


@dataclass
class Account:
    balance: int = 0


class InsufficientFundsError(Exception):
    """A withdrawal larger than the balance: rejected, nothing stored."""


class BankAccount(Actor[Account]):
    state_type = Account

    async def deposit(self, ctx: ActorContext[Account], payload: dict[str, Any]) -> int:
        ctx.state.balance += int(payload["amount"])
        await ctx.kv_set(b"balance", str(ctx.state.balance).encode())
        return ctx.state.balance

    async def withdraw(self, ctx: ActorContext[Account], payload: dict[str, Any]) -> int:
        amount = int(payload["amount"])
        if amount > ctx.state.balance:
            raise InsufficientFundsError(f"balance {ctx.state.balance} < {amount}")
        ctx.state.balance -= amount
        await ctx.kv_set(b"balance", str(ctx.state.balance).encode())
        return ctx.state.balance


class BankWorkload(WorkloadBase):
    """Clients deposit and withdraw on a few accounts, retrying with idempotency keys."""

    name = "bank"

    def __init__(self, accounts: int = 3) -> None:
        self.accounts = accounts
        self._ids: list[ActorId] = []
        self._acked: dict[ActorId, int] = {}
        self._unknown_low: dict[ActorId, int] = {}
        self._unknown_high: dict[ActorId, int] = {}
        self._counters: dict[int, int] = {}

    async def setup(self, sim: Simulation) -> None:
        sim.register("bank", BankAccount)
        self._ids = [sim.actor("bank", f"acct{i}") for i in range(self.accounts)]
        for actor in self._ids:
            self._acked[actor] = 0
            self._unknown_low[actor] = 0
            self._unknown_high[actor] = 0

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
        n = self._counters[client] = self._counters.get(client, 0) + 1
        actor = rng.choice(self._ids)
        amount = rng.randint(1, 100)
        withdraw = rng.random() < 0.4
        operation = "withdraw" if withdraw else "deposit"
        delta = -amount if withdraw else amount
        outcome = await sim.call(
            actor, operation, {"amount": amount}, key=f"c{client}.{n}", rng=rng
        )
        if outcome.status == "ok":
            self._acked[actor] += delta
        elif outcome.status == "gave_up":
            if delta < 0:
                self._unknown_low[actor] += delta
            else:
                self._unknown_high[actor] += delta

    async def check_actor(self, sim: Simulation, actor: ActorId) -> None:
        state = await sim.state(actor, Account)
        await kv_matches_state(sim, actor, None if state is None else state.balance, b"balance")

    async def check(self, sim: Simulation) -> None:
        for actor in self._ids:
            state = await sim.state(actor, Account)
            balance = 0 if state is None else state.balance
            await kv_matches_state(sim, actor, None if state is None else balance, b"balance")
            low = self._acked[actor] + self._unknown_low[actor]
            high = self._acked[actor] + self._unknown_high[actor]
            if not low <= balance <= high:
                sim.violation(
                    f"{actor}: balance {balance} outside [{low}, {high}] implied by "
                    "the acknowledged operations (lost or duplicated money)"
                )
            if balance < 0:
                sim.violation(f"{actor}: negative balance {balance}")
