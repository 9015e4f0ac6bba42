"""The demo's invariants, checked on what storage holds after a run.

``audit`` reads every account and the ledger through a fresh, fault-free
runtime (so every actor is reloaded from storage); ``check`` is a pure
function of that data. The checks are deliberately redundant: each account's
own records, the ledger of acknowledged operations and the transfer legs are
three independent views that must agree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kelpie.demo.bank import LEDGER_ID, account_id
from kelpie.identity import ActorId

__all__ = ["Audit", "Invariant", "audit", "check", "half_done_transfers"]

Invoke = Callable[[ActorId, str, Any, str | None], Awaitable[Any]]


@dataclass(frozen=True)
class Invariant:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Audit:
    ledger: dict[str, Any]
    accounts: list[dict[str, Any]]
    """``AccountActor.audit`` of ``acct-0000`` .. ``acct-{n-1}``, in order."""


async def audit(invoke: Invoke) -> Audit:
    """Read the ledger and every account the ledger knows of."""
    ledger = await invoke(LEDGER_ID, "audit", None, None)
    accounts = [
        await invoke(account_id(index), "audit", None, None) for index in range(ledger["accounts"])
    ]
    return Audit(ledger, accounts)


def _run_of(op_id: str) -> int:
    return int(op_id[1:].split("-")[0])


def _first(problems: list[str], more: str = "") -> str:
    shown = "; ".join(problems[:2])
    if len(problems) > 2:
        shown += f"; and {len(problems) - 2} more"
    return shown + more


def _kv_matches_state(accounts: list[dict[str, Any]]) -> Invariant:
    name = "KV balance equals state balance"
    problems = []
    for index, acct in enumerate(accounts):
        kv, balance = acct["kv_balance"], acct["balance"]
        untouched = kv is None and balance == 0 and acct["applied"] == 0
        if not untouched and kv != str(balance):
            problems.append(f"{account_id(index).id}: KV {kv}, state {balance}")
    if problems:
        return Invariant(name, False, _first(problems))
    return Invariant(name, True, f"{len(accounts)} accounts")


def _expected_records(ack: list[Any]) -> list[tuple[int, str, dict[str, Any]]]:
    """(account, op id, record) that an acknowledged operation must have left."""
    op_id, kind, account, peer, amount, ok = ack
    if kind == "d":
        return [(account, op_id, {"amount": amount, "peer": None, "ok": True})]
    records = [(account, op_id, {"amount": -amount if ok else 0, "peer": peer, "ok": ok})]
    if kind == "t" and ok:
        records.append((peer, op_id, {"amount": amount, "peer": account, "ok": True}))
    return records


def _applied_once(audit: Audit) -> Invariant:
    name = "every acknowledged op applied exactly once"
    ledger, accounts = audit.ledger, audit.accounts
    problems = []
    for index, acct in enumerate(accounts):
        ops = acct["ops"]
        total = sum(record["amount"] for record in ops.values())
        if total != acct["balance"] or len(ops) != acct["applied"]:
            problems.append(
                f"{account_id(index).id}: state says {acct['applied']} ops / balance "
                f"{acct['balance']}, records say {len(ops)} ops / {total}"
            )
    acked = set()
    for ack in ledger["acks"]:
        acked.add(ack[0])
        for account, op_id, want in _expected_records(ack):
            have = accounts[account]["ops"].get(op_id) if account < len(accounts) else None
            if have != want:
                problems.append(f"{op_id} on {account_id(account).id}: want {want}, found {have}")
    finished = set(ledger["finished_runs"])
    abandoned = set(ledger["abandoned"])
    for index, acct in enumerate(accounts):
        for op_id in sorted(acct["ops"]):
            if _run_of(op_id) in finished and op_id not in acked and op_id not in abandoned:
                problems.append(f"{op_id} on {account_id(index).id} was never acknowledged")
    if problems:
        return Invariant(name, False, _first(problems))
    runs = len(finished)
    return Invariant(name, True, f"{len(acked):,} ops over {runs} run{'s' * (runs != 1)}")


def _money_conserved(audit: Audit) -> Invariant:
    name = "money conserved"
    ledger = audit.ledger
    acked = {ack[0] for ack in ledger["acks"]}
    unledgered = 0  # external amounts of interrupted runs' or abandoned operations
    for acct in audit.accounts:
        for op_id, record in acct["ops"].items():
            if record["peer"] is None and op_id not in acked:
                unledgered += record["amount"]
    total = sum(acct["balance"] for acct in audit.accounts)
    deposited, withdrawn = ledger["deposited"], ledger["withdrawn"]
    expected = deposited - withdrawn + unledgered
    detail = f"balances {total:,} = deposits {deposited:,} - withdrawals {withdrawn:,}"
    if unledgered:
        detail += f" + {unledgered:,} unacknowledged"
    if total != expected:
        detail = f"balances {total:,}, but deposits - withdrawals = {expected:,}"
    return Invariant(name, total == expected, detail)


def _transfers_net_zero(accounts: list[dict[str, Any]]) -> Invariant:
    name = "every transfer's two legs match"
    problems = []
    legs = 0
    for index, acct in enumerate(accounts):
        for op_id, record in sorted(acct["ops"].items()):
            peer = record["peer"]
            if peer is None or record["amount"] == 0:
                continue
            legs += 1
            other = accounts[peer]["ops"].get(op_id) if peer < len(accounts) else None
            want = {"amount": -record["amount"], "peer": index, "ok": True}
            if other != want:
                problems.append(f"{op_id}: {account_id(index).id} {record}, peer has {other}")
    if problems:
        return Invariant(name, False, _first(problems))
    return Invariant(name, True, f"{legs // 2:,} transfers")


def check(audit: Audit) -> list[Invariant]:
    """The invariants, in the order the demo prints them."""
    return [
        _kv_matches_state(audit.accounts),
        _applied_once(audit),
        _money_conserved(audit),
        _transfers_net_zero(audit.accounts),
    ]


def half_done_transfers(audit: Audit) -> list[tuple[str, int, int, int]]:
    """Transfers whose withdrawal landed but whose deposit did not (an interrupted
    or abandoned run): ``(op_id, from_account, to_account, amount)``, sorted."""
    accounts = audit.accounts
    pending = []
    for index, acct in enumerate(accounts):
        for op_id, record in acct["ops"].items():
            peer = record["peer"]
            if peer is None or record["amount"] >= 0:
                continue
            if peer >= len(accounts) or op_id not in accounts[peer]["ops"]:
                pending.append((op_id, index, peer, -record["amount"]))
    return sorted(pending)
