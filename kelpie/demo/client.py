"""The demo's client: bank operations over a runtime, retried with idempotency keys.

A transient storage failure (``StorageUnavailableError``), a conflict
(``TransactionConflictError``) or a commit whose outcome is unknown
(``CommitOutcomeUnknownError``) is retried with the *same* idempotency key, so
an invocation that did land is answered from its stored result instead of
being applied twice. Retries are bounded: an operation that still fails is
abandoned and reported.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kelpie.demo.bank import account_id
from kelpie.errors import (
    CommitOutcomeUnknownError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.runtime.runtime import Runtime

__all__ = ["RETRYABLE", "BankClient", "GaveUpError", "Operation", "make_operations"]

RETRYABLE: tuple[type[Exception], ...] = (
    CommitOutcomeUnknownError,
    StorageUnavailableError,
    TransactionConflictError,
)


class GaveUpError(Exception):
    """An invocation still failed after the last attempt; its outcome is unknown."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation: ``d`` deposit, ``w`` withdrawal, ``t`` transfer a -> b."""

    op_id: str
    kind: str
    account: int
    amount: int
    peer: int | None = None


def make_operations(rng: random.Random, run: int, count: int, accounts: int) -> list[Operation]:
    """A seeded mix: 40% deposits, 20% withdrawals, 40% transfers (none with one account)."""
    operations = []
    for n in range(count):
        op_id = f"r{run:06d}-{n:06d}"
        roll = rng.random()
        account = rng.randrange(accounts)
        amount = rng.randint(1, 100)
        if roll < 0.4 or (accounts < 2 and roll >= 0.6):
            operations.append(Operation(op_id, "d", account, amount))
        elif roll < 0.6:
            operations.append(Operation(op_id, "w", account, amount))
        else:
            peer = (account + rng.randrange(1, accounts)) % accounts
            operations.append(Operation(op_id, "t", account, amount, peer))
    return operations


@dataclass
class BankClient:
    """Invokes the bank through ``runtime``, retrying, and keeps what was acknowledged."""

    runtime: Runtime
    max_attempts: int = 30
    invocations: int = 0
    """Successful invocations (each answered once, retries not counted)."""
    attempts: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    acks: list[list[Any]] = field(default_factory=list)
    """Acknowledged operations: ``[op_id, kind, account, peer, amount, ok]``."""
    abandoned: list[str] = field(default_factory=list)
    deposited: int = 0
    withdrawn: int = 0

    async def invoke(self, actor: ActorId, operation: str, payload: Any, key: str | None) -> Any:
        """``runtime.invoke`` with ``key``, retried on transient errors up to ``max_attempts``.

        Pass ``key=None`` only for invocations that write nothing (reads).
        """
        for attempt in range(1, self.max_attempts + 1):
            self.attempts += 1
            try:
                result = await self.runtime.invoke(actor, operation, payload, idempotency_key=key)
            except RETRYABLE as exc:
                if attempt == self.max_attempts:
                    raise GaveUpError(
                        f"{operation} on {actor}{f' (key {key})' if key else ''} "
                        f"failed {attempt} times; "
                        f"last error: {type(exc).__name__}: {exc}"
                    ) from exc
                self.retries[next(c.__name__ for c in RETRYABLE if isinstance(exc, c))] += 1
                # A short, growing pause: lets an outage pass without spinning.
                await asyncio.sleep(min(0.001 * attempt, 0.05))
            else:
                self.invocations += 1
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def perform(self, op: Operation) -> None:
        """Run one operation to its acknowledgement, or record it as abandoned."""
        try:
            ok = await self._perform(op)
        except GaveUpError:
            self.abandoned.append(op.op_id)
            raise
        self.acks.append([op.op_id, op.kind, op.account, op.peer, op.amount, ok])
        if op.kind == "d":
            self.deposited += op.amount
        elif op.kind == "w" and ok:
            self.withdrawn += op.amount

    async def _perform(self, op: Operation) -> bool:
        source = account_id(op.account)
        if op.kind == "d":
            payload = {"op": op.op_id, "amount": op.amount, "peer": None}
            await self.invoke(source, "deposit", payload, f"{op.op_id}/d")
            return True
        payload = {"op": op.op_id, "amount": op.amount, "peer": op.peer}
        result = await self.invoke(source, "withdraw", payload, f"{op.op_id}/w")
        ok = bool(result["ok"])
        if op.kind == "t" and ok:
            assert op.peer is not None
            payload = {"op": op.op_id, "amount": op.amount, "peer": op.account}
            await self.invoke(account_id(op.peer), "deposit", payload, f"{op.op_id}/d")
        return ok
