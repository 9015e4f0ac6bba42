"""The ledger: deposits, withdrawals and transfers between accounts.

Each account actor keeps its balance in its state and a copy in KV
(``balance``), and records every operation it applies under ``op/<id>`` as
``<times applied>:<delta>`` -- written by the handler without looking for an
earlier record, so only the runtime's idempotency keys stand between a retry
and a double application. A transfer is a two-step saga driven by its client:
debit the source (key ``<id>d``), then credit the destination (``<id>c``),
retrying the credit until it is acknowledged.

Settlement (``check``, faults off) decides what clients left in doubt from the
stored ``op/<id>`` records, not by resending with the same keys (a key may have
left a small idempotency window): a debit in doubt was applied iff
``op/<id>d`` exists, and a debited transfer whose ``op/<id>c`` is absent is
credited with a fresh key. ``LedgerModel`` checks each account's history.

Invariants: KV balance equals state at every quiet moment; every acknowledged
operation applied exactly once and none lost; no rejected or phantom
operation applied; each balance equals the sum of its applied operations and
is never negative; money is conserved (every debited transfer credited, the
total equals external deposits minus withdrawals).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from kelpie.actor.actor import Actor
from kelpie.actor.context import ActorContext
from kelpie.dst.harness import Outcome, Simulation, WorkloadBase
from kelpie.dst.invariants import OperationLog, kv_matches_state
from kelpie.dst.linearizability import Model
from kelpie.dst.workloads.models import LedgerModel
from kelpie.identity import ActorId

__all__ = ["InsufficientFundsError", "LedgerAccount", "LedgerState", "LedgerWorkload"]

_OP = b"op/"


@dataclass
class LedgerState:
    balance: int = 0


class InsufficientFundsError(Exception):
    """The account cannot go below zero: rejected, nothing stored."""


class LedgerAccount(Actor[LedgerState]):
    state_type = LedgerState

    async def apply(self, ctx: ActorContext[LedgerState], payload: dict[str, Any]) -> int:
        """Add ``delta`` to the balance and record operation ``op``."""
        delta = int(payload["delta"])
        if ctx.state.balance + delta < 0:
            raise InsufficientFundsError(f"balance {ctx.state.balance}, delta {delta}")
        ctx.state.balance += delta
        await ctx.kv_set(b"balance", str(ctx.state.balance).encode())
        key = _OP + str(payload["op"]).encode()
        previous = await ctx.kv_get(key)
        count = 1 if previous is None else int(previous.split(b":")[0]) + 1
        await ctx.kv_set(key, f"{count}:{delta}".encode())
        return ctx.state.balance

    async def balance(self, ctx: ActorContext[LedgerState], payload: Any) -> int:
        return ctx.state.balance


@dataclass
class _Transfer:
    op_id: str
    source: ActorId
    target: ActorId
    amount: int


class LedgerWorkload(WorkloadBase):
    """Clients move money around ``accounts`` accounts under every fault."""

    name = "ledger"
    models: ClassVar[dict[str, Model]] = {"ledger": LedgerModel()}
    required_paths: ClassVar[tuple[str, ...]] = ()

    def __init__(self, accounts: int = 5, max_amount: int = 100) -> None:
        self.accounts = accounts
        self.max_amount = max_amount
        self.log = OperationLog()
        self._ids: list[ActorId] = []
        self._counters: dict[int, int] = {}
        self._in_doubt: list[_Transfer] = []  # debit given up on: outcome unknown
        self._uncredited: list[_Transfer] = []  # debit acknowledged, credit not yet

    async def setup(self, sim: Simulation) -> None:
        sim.register("ledger", LedgerAccount)
        self._ids = [sim.actor("ledger", f"acct{i}") for i in range(self.accounts)]

    async def _apply(
        self,
        sim: Simulation,
        rng: random.Random,
        op_id: str,
        actor: ActorId,
        delta: int,
        kind: str,
        attempts: int | None = None,
        key: str | None = None,
    ) -> Outcome:
        record = self.log.ops.get(op_id) or self.log.issue(op_id, actor, delta, kind)
        outcome = await sim.call(
            actor,
            "apply",
            {"op": op_id, "delta": delta},
            key=op_id if key is None else key,
            rng=rng,
            attempts=attempts,
        )
        record.status = outcome.status
        return outcome

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
        n = self._counters[client] = self._counters.get(client, 0) + 1
        op_id = f"c{client}.{n}"
        choice = rng.random()
        amount = rng.randint(1, self.max_amount)
        if choice < 0.4:
            await self._apply(sim, rng, op_id, rng.choice(self._ids), amount, "external")
        elif choice < 0.65:
            await self._apply(sim, rng, op_id, rng.choice(self._ids), -amount, "external")
        else:
            source, target = rng.sample(self._ids, 2)
            await self._transfer(sim, rng, _Transfer(op_id, source, target, amount))

    async def _transfer(
        self, sim: Simulation, rng: random.Random, transfer: _Transfer, attempts: int | None = None
    ) -> None:
        debit = await self._apply(
            sim, rng, transfer.op_id + "d", transfer.source, -transfer.amount, "debit", attempts
        )
        if debit.status == "gave_up":
            self._in_doubt.append(transfer)
        elif debit.status == "ok":
            await self._credit(sim, rng, transfer, attempts)

    async def _credit(
        self, sim: Simulation, rng: random.Random, transfer: _Transfer, attempts: int | None
    ) -> None:
        credit = await self._apply(
            sim, rng, transfer.op_id + "c", transfer.target, transfer.amount, "credit", attempts
        )
        if credit.status != "ok":
            self._uncredited.append(transfer)

    async def _settle_credit(
        self, sim: Simulation, rng: random.Random, transfer: _Transfer
    ) -> None:
        """Credit a debited transfer unless its credit is stored (with a fresh key)."""
        credit = f"{transfer.op_id}c"
        if await sim.kv(transfer.target, _OP + credit.encode()) is not None:
            return
        outcome = await self._apply(
            sim, rng, credit, transfer.target, transfer.amount, "credit", 3, key=credit + "/settle"
        )
        if outcome.status != "ok":
            sim.violation(
                f"transfer {transfer.op_id} cannot complete with every fault off: credit "
                f"{outcome.status} ({outcome.error!r})"
            )

    async def check_actor(self, sim: Simulation, actor: ActorId) -> None:
        # Two reads: a late commit (a paused process's) may land between them, so a
        # mismatch is reported only if a second look sees the same state.
        state = await sim.state(actor, LedgerState)
        balance = None if state is None else state.balance
        if await kv_matches_state(sim, actor, balance, b"balance", report=False):
            return
        again = await sim.state(actor, LedgerState)
        if again == state:
            await kv_matches_state(sim, actor, balance, b"balance")

    async def check(self, sim: Simulation) -> None:
        # Faults are off and every earlier process is gone: decide from storage.
        rng = sim.random.stream("ledger/settle")
        in_doubt, self._in_doubt = self._in_doubt, []
        uncredited, self._uncredited = self._uncredited, []
        for transfer in in_doubt:
            if await sim.kv(transfer.source, _OP + f"{transfer.op_id}d".encode()) is not None:
                uncredited.append(transfer)  # the debit was applied
        for transfer in uncredited:
            await self._settle_credit(sim, rng, transfer)

        total = 0
        applied_by_id: dict[str, int] = {}
        for actor in self._ids:
            state = await sim.state(actor, LedgerState)
            balance = 0 if state is None else state.balance
            total += balance
            await kv_matches_state(sim, actor, None if state is None else balance, b"balance")
            applied: dict[str, tuple[int, int]] = {}
            for key in await sim.kv_keys(actor, _OP):
                raw = await sim.kv(actor, key)
                assert raw is not None
                times, _, amount = raw.decode().partition(":")
                applied[key[len(_OP) :].decode()] = (int(times), int(amount))
            self.log.verify_applied(sim, actor, applied)
            history = sum(count * delta for count, delta in applied.values())
            if history != balance:
                sim.violation(f"{actor}: balance {balance} != sum of applied operations {history}")
            if balance < 0:
                sim.violation(f"{actor}: negative balance {balance}")
            for op_id, (count, delta) in applied.items():
                applied_by_id[op_id] = count * delta
        external = sum(
            amount
            for op_id, amount in applied_by_id.items()
            if self.log.ops.get(op_id) is not None and self.log.ops[op_id].kind == "external"
        )
        if total != external:
            sim.violation(
                f"money not conserved: accounts hold {total}, external deposits minus "
                f"withdrawals applied {external}"
            )
        for op_id, record in sorted(self.log.ops.items()):
            if record.kind == "debit" and op_id in applied_by_id:
                credit = op_id[:-1] + "c"
                if credit not in applied_by_id:
                    sim.violation(f"transfer {op_id[:-1]}: debited but never credited")
