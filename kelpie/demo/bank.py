"""The demo's actors: bank accounts and the ledger of what the client saw acknowledged.

Every account handler changes the state *and* writes KV in the same invocation
(the ``balance`` key, and an ``op/<id>`` record of the operation), so a
commit that applied one without the other would show up in the check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kelpie.actor.actor import Actor
from kelpie.actor.context import ActorContext
from kelpie.identity import ActorId

__all__ = [
    "ACCOUNT_NAMESPACE",
    "BALANCE_KEY",
    "LEDGER_ID",
    "OP_PREFIX",
    "Account",
    "AccountActor",
    "Ledger",
    "LedgerActor",
    "account_id",
]

ACCOUNT_NAMESPACE = "demo-account"
LEDGER_ID = ActorId("demo-meta", "ledger")
BALANCE_KEY = b"balance"
OP_PREFIX = b"op/"
_ACKS_PREFIX = b"acks/"


def account_id(index: int) -> ActorId:
    """``acct-0000``, ``acct-0001``, ... in the demo's account namespace."""
    return ActorId(ACCOUNT_NAMESPACE, f"acct-{index:04d}")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class Account:
    balance: int = 0
    applied: int = 0
    """How many ``op/`` records this account holds: one per applied operation."""


class AccountActor(Actor[Account]):
    """A bank account. Payloads: ``{"op": id, "amount": n, "peer": index | None}``.

    ``peer`` marks the leg of a transfer (the other account's index). A
    withdrawal larger than the balance is rejected, and the rejection is
    recorded like any other outcome (amount 0), so a retry replays it.
    """

    state_type = Account

    async def _apply(self, ctx: ActorContext[Account], payload: dict[str, Any], sign: int) -> Any:
        op: str = payload["op"]
        amount: int = payload["amount"]
        ok = sign > 0 or amount <= ctx.state.balance
        applied = sign * amount if ok else 0
        ctx.state.balance += applied
        ctx.state.applied += 1
        await ctx.kv_set(BALANCE_KEY, str(ctx.state.balance).encode())
        record = {"amount": applied, "peer": payload.get("peer"), "ok": ok}
        await ctx.kv_set(OP_PREFIX + op.encode(), _dumps(record))
        return {"ok": ok, "balance": ctx.state.balance}

    async def deposit(self, ctx: ActorContext[Account], payload: dict[str, Any]) -> Any:
        return await self._apply(ctx, payload, +1)

    async def withdraw(self, ctx: ActorContext[Account], payload: dict[str, Any]) -> Any:
        return await self._apply(ctx, payload, -1)

    async def audit(self, ctx: ActorContext[Account], payload: None) -> Any:
        """Everything the checker needs; writes nothing, so it commits nothing."""
        raw = await ctx.kv_get(BALANCE_KEY)
        ops = {}
        for key in await ctx.kv_list_keys(OP_PREFIX):
            value = await ctx.kv_get(key)
            ops[key[len(OP_PREFIX) :].decode()] = None if value is None else json.loads(value)
        return {
            "balance": ctx.state.balance,
            "applied": ctx.state.applied,
            "kv_balance": None if raw is None else raw.decode(),
            "ops": ops,
        }


@dataclass
class Ledger:
    runs: int = 0
    """Runs started (a run's operation ids start with ``r<run>-``)."""
    accounts: int = 0
    """The most accounts any run used: the checker audits this many."""
    finished: int = 0
    acknowledged: int = 0
    deposited: int = 0
    withdrawn: int = 0


class LedgerActor(Actor[Ledger]):
    """What the client saw acknowledged, run by run, kept for later checks.

    ``record_acks`` stores one chunk of a run's acknowledged operations;
    ``finish_run`` adds the run's totals. Only finished runs are checked
    against the accounts (an interrupted run's operations are still checked
    for consistency, through the accounts' own records).
    """

    state_type = Ledger

    async def begin_run(self, ctx: ActorContext[Ledger], payload: dict[str, Any]) -> Any:
        ctx.state.runs += 1
        ctx.state.accounts = max(ctx.state.accounts, payload["accounts"])
        return {"run": ctx.state.runs, "accounts": ctx.state.accounts}

    async def record_acks(self, ctx: ActorContext[Ledger], payload: dict[str, Any]) -> Any:
        key = _ACKS_PREFIX + f"{payload['run']:06d}/{payload['chunk']:06d}".encode()
        await ctx.kv_set(key, _dumps(payload["acks"]))
        return len(payload["acks"])

    async def finish_run(self, ctx: ActorContext[Ledger], payload: dict[str, Any]) -> Any:
        await ctx.kv_set(f"run/{payload['run']:06d}".encode(), _dumps(payload))
        ctx.state.finished += 1
        ctx.state.acknowledged += payload["acknowledged"]
        ctx.state.deposited += payload["deposited"]
        ctx.state.withdrawn += payload["withdrawn"]
        return ctx.state.finished

    async def audit(self, ctx: ActorContext[Ledger], payload: None) -> Any:
        """The ledger totals and the acknowledged operations of every finished run."""
        finished = set()
        abandoned: list[str] = []
        for key in await ctx.kv_list_keys(b"run/"):
            finished.add(int(key[len(b"run/") :]))
            summary = await ctx.kv_get(key)
            if summary is not None:
                abandoned.extend(json.loads(summary).get("abandoned", []))
        acks: list[Any] = []
        for key in await ctx.kv_list_keys(_ACKS_PREFIX):
            run = int(key[len(_ACKS_PREFIX) :].split(b"/")[0])
            value = await ctx.kv_get(key)
            if run in finished and value is not None:
                acks.extend(json.loads(value))
        state = ctx.state
        return {
            "runs": state.runs,
            "accounts": state.accounts,
            "finished": state.finished,
            "acknowledged": state.acknowledged,
            "deposited": state.deposited,
            "withdrawn": state.withdrawn,
            "finished_runs": sorted(finished),
            "abandoned": abandoned,
            "acks": acks,
        }
