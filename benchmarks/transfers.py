"""Transfers/s (debit + delivered credit) against plain invocations/s on one backend (issue 16).

    python benchmarks/transfers.py [URL ...]      # default: memory:// and a temporary LMDB

A transfer is a ``debit`` invocation whose commit carries a ``ctx.send(credit)``
message, counted once the credit has been applied at the target. The baseline
is the same number of plain ``credit`` invocations (one commit each) by the
same concurrent clients. Target: ratio >= 0.4 (two commits plus delivery).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from kelpie import Actor, ActorContext, ActorId, Runtime, open_storage

ACCOUNTS = 64
CLIENTS = 64
OPERATIONS = 4000


@dataclass
class Balance:
    balance: int = 0
    received: int = 0


class Account(Actor[Balance]):
    state_type = Balance

    async def credit(self, ctx: ActorContext[Balance], payload: int) -> None:
        ctx.state.balance += payload
        ctx.state.received += 1

    async def debit(self, ctx: ActorContext[Balance], payload: dict[str, Any]) -> None:
        ctx.state.balance -= payload["amount"]
        ctx.send(ActorId(ctx.actor_id.namespace, payload["to"]), "credit", payload["amount"])

    async def received(self, ctx: ActorContext[Balance], payload: None) -> int:
        return ctx.state.received


async def _run(url: str, namespace: str, transfers: bool) -> float:
    async with open_storage(url) as storage, Runtime(storage) as runtime:
        runtime.register(namespace, Account)
        ids = [ActorId(namespace, f"a{i}") for i in range(ACCOUNTS)]
        for actor in ids:  # activate first: measure steady state
            await runtime.invoke(actor, "received")
        per_client = OPERATIONS // CLIENTS

        async def client(c: int) -> None:
            for n in range(per_client):
                source = ids[(c + n) % ACCOUNTS]
                target = ids[(c + 7 * n + 1) % ACCOUNTS]
                if transfers:
                    await runtime.invoke(source, "debit", {"to": target.id, "amount": 1})
                else:
                    await runtime.invoke(target, "credit", 1)

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(CLIENTS)))
        total = per_client * CLIENTS
        while True:  # every credit applied
            done = 0
            for actor in ids:
                done += await runtime.invoke(actor, "received")
            if done >= total:
                break
            await asyncio.sleep(0.02)
        return total / (time.perf_counter() - started)


async def measure(url: str) -> tuple[float, float]:
    stamp = f"{time.monotonic_ns()}"
    plain = await _run(url, f"plain{stamp}", transfers=False)
    moved = await _run(url, f"xfer{stamp}", transfers=True)
    return plain, moved


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        urls = argv or ["memory://", f"lmdb://{tmp}/bench"]
        print(f"{'backend':<12} {'invocations/s':>14} {'transfers/s':>12} {'ratio':>6}")
        ok = True
        for url in urls:
            plain, moved = asyncio.run(measure(url))
            ratio = moved / plain
            ok = ok and ratio >= 0.4
            name = url.split(":", 1)[0]
            print(f"{name:<12} {plain:>14,.0f} {moved:>12,.0f} {ratio:>6.2f}")
        print("target: transfers/s >= 0.4 x invocations/s:", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
