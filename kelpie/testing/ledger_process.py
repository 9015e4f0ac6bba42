"""The ledger workload in a process of its own, with a durable log of what it was told.

Run as ``python -m kelpie.testing.ledger_process URL --log PATH [options]``. The
process

1. **checks** what the storage holds against the log (``check_ledger``) and
   prints the result as one JSON line on stdout -- a fresh process reopening
   the data after the previous writer was killed;
2. **settles** what the previous writers left in doubt: every operation
   issued but never answered is retried with its idempotency key, and every
   transfer debited but not credited is credited (a client finishing its work
   after a crash); ``--no-settle`` skips this for writers that run at the
   same time as others, whose operations in flight look unanswered in the log;
3. **runs** ``--ops`` operations (deposits, withdrawals, transfers) from
   ``--clients`` concurrent clients, or until it is killed.

The log is append-only: ``I op actor delta kind`` is written before an
invocation, ``A op`` (acknowledged, then ``fsync``) after it returned, ``R op``
after the handler rejected it. A SIGKILL can tear at most the last line,
which the checker ignores. ``check_ledger`` trusts only the log and the
stored records (read behind the runtime's back with ``KelpieInspector``):
KV balance equals state (no torn commit), every applied operation was issued
for that account with that delta and applied once, every acknowledged one is
there, no rejected one is, each balance is the sum of its operations and
never negative; once settled, every debit is credited and the total equals
external deposits minus withdrawals (money is conserved).

Test-harness code: it may use the wall clock and its own seeded ``random``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kelpie.dst.inspect import KelpieInspector
from kelpie.dst.workloads.ledger import InsufficientFundsError, LedgerAccount, LedgerState
from kelpie.errors import StorageError
from kelpie.identity import ActorId
from kelpie.runtime import Runtime
from kelpie.storage.protocol import Storage
from kelpie.storage.registry import open_storage

__all__ = ["LedgerLog", "check_ledger", "main", "parse_log"]

NAMESPACE = "ledger"
_OP = b"op/"
_RETRIES = 60


def account(number: int) -> ActorId:
    return ActorId(NAMESPACE, f"acct{number}")


@dataclass
class Intent:
    op_id: str
    actor: str
    delta: int
    kind: str


@dataclass
class LedgerLog:
    """What the log says: operations issued, acknowledged and rejected."""

    intents: dict[str, Intent] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)

    def in_doubt(self) -> list[Intent]:
        done = self.acked | self.rejected
        return [i for op, i in sorted(self.intents.items()) if op not in done]


def parse_log(path: Path) -> LedgerLog:
    """Read the log; a torn last line (no newline: the writer died) is ignored."""
    log = LedgerLog()
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return log
    lines = text.split("\n")
    for line in lines[:-1]:  # the part after the last newline is torn or empty
        parts = line.split(" ")
        if parts[0] == "I" and len(parts) == 5:
            log.intents[parts[1]] = Intent(parts[1], parts[2], int(parts[3]), parts[4])
        elif parts[0] == "A" and len(parts) == 2:
            log.acked.add(parts[1])
        elif parts[0] == "R" and len(parts) == 2:
            log.rejected.add(parts[1])
    return log


async def check_ledger(
    storage: Storage, log: LedgerLog, accounts: int, *, settled: bool = False
) -> tuple[list[str], dict[str, int]]:
    """Every ledger invariant, from the log and the stored records; ``(violations, counts)``."""
    inspector = KelpieInspector()
    violations: list[str] = []
    applied_by_op: dict[str, int] = {}
    total = 0
    for number in range(accounts):
        actor = account(number)
        state = await inspector.state(storage, actor, LedgerState)
        balance = 0 if state is None else state.balance
        total += balance
        raw_kv = await inspector.kv(storage, actor, b"balance")
        kv = None if raw_kv is None else int(raw_kv)
        if kv != (None if state is None else balance) and not (kv is None and balance == 0):
            violations.append(f"{actor}: torn commit: KV balance {kv} but state {balance}")
        history = 0
        for key in await inspector.kv_keys(storage, actor, _OP):
            raw = await inspector.kv(storage, actor, key)
            assert raw is not None
            times_text, _, delta_text = raw.decode().partition(":")
            op_id, times, delta = key[len(_OP) :].decode(), int(times_text), int(delta_text)
            history += times * delta
            applied_by_op[op_id] = times * delta
            intent = log.intents.get(op_id)
            if intent is None or intent.actor != actor.id:
                violations.append(f"{actor}: operation {op_id} applied but never issued for it")
            elif intent.delta != delta:
                violations.append(f"{actor}: {op_id} applied {delta}, issued {intent.delta}")
            if times != 1:
                violations.append(f"{actor}: operation {op_id} applied {times} times")
            if op_id in log.rejected:
                violations.append(f"{actor}: operation {op_id} was rejected but is applied")
        if history != balance:
            violations.append(f"{actor}: balance {balance} != sum of its operations {history}")
        if balance < 0:
            violations.append(f"{actor}: negative balance {balance}")
    lost = sorted(op for op in log.acked if op not in applied_by_op)
    for op_id in lost[:20]:
        violations.append(f"acknowledged operation {op_id} was lost")
    for op_id in applied_by_op:
        if op_id.endswith("c") and op_id[:-1] + "d" not in applied_by_op:
            violations.append(f"transfer {op_id[:-1]} credited but never debited")
    if settled:
        for op_id in applied_by_op:
            if op_id.endswith("d") and op_id[:-1] + "c" not in applied_by_op:
                violations.append(f"transfer {op_id[:-1]} debited but never credited")
        external = sum(
            amount
            for op_id, amount in applied_by_op.items()
            if op_id in log.intents and log.intents[op_id].kind == "external"
        )
        if external != total:
            violations.append(f"money not conserved: accounts hold {total}, external {external}")
    counts = {"acked": len(log.acked), "applied": len(applied_by_op), "lost": len(lost)}
    return violations, counts


class _Writer:
    """Appends log lines; acknowledgements are fsynced before the client moves on."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def line(self, text: str, *, durable: bool = False) -> None:
        os.write(self._fd, (text + "\n").encode())
        if durable:
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class _Client:
    def __init__(self, runtime: Runtime, writer: _Writer, log: LedgerLog) -> None:
        self.runtime = runtime
        self.writer = writer
        self.log = log
        self.retries = 0
        """Attempts that failed with a storage error (conflicts included) and were retried."""

    async def apply(self, op_id: str, actor: str, delta: int, kind: str) -> str:
        """Invoke with retries; ``"ok"``, ``"rejected"`` or ``"doubt"``."""
        if op_id not in self.log.intents:
            self.writer.line(f"I {op_id} {actor} {delta} {kind}")
            self.log.intents[op_id] = Intent(op_id, actor, delta, kind)
        payload = {"op": op_id, "delta": delta}
        for attempt in range(_RETRIES):
            try:
                await self.runtime.invoke(
                    ActorId(NAMESPACE, actor), "apply", payload, idempotency_key=op_id
                )
            except InsufficientFundsError:
                self.writer.line(f"R {op_id}")
                self.log.rejected.add(op_id)
                return "rejected"
            except StorageError:
                self.retries += 1
                await asyncio.sleep(0.002 * (attempt + 1))
                continue
            self.writer.line(f"A {op_id}", durable=True)
            self.log.acked.add(op_id)
            return "ok"
        return "doubt"

    async def settle(self, op_id: str, actor: str, delta: int, kind: str) -> str:
        """``apply`` until the outcome is known (the storage may be out for a while)."""
        while True:
            outcome = await self.apply(op_id, actor, delta, kind)
            if outcome != "doubt":
                return outcome
            await asyncio.sleep(0.05)

    async def transfer(self, op_id: str, source: str, target: str, amount: int) -> None:
        if await self.apply(op_id + "d", source, -amount, "debit") == "ok":
            await self.settle(op_id + "c", target, amount, "credit")


async def _settle(client: _Client) -> int:
    """Finish what earlier writers left in doubt; return how many operations were settled."""
    log = client.log
    settled = 0
    for intent in log.in_doubt():
        settled += 1
        await client.settle(intent.op_id, intent.actor, intent.delta, intent.kind)
    for op_id in sorted(log.intents):
        intent = log.intents[op_id]
        if intent.kind == "debit" and op_id in log.acked:
            credit = op_id[:-1] + "c"
            if credit not in log.acked:
                target = log.intents[credit].actor if credit in log.intents else None
                if target is None:
                    # Killed between the debit's ack and the credit's intent: the
                    # target is recorded in the debit's op id (…-<target>-d).
                    target = op_id.rsplit("-", 2)[1]
                settled += 1
                await client.settle(credit, target, -intent.delta, "credit")
    return settled


async def _run(args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    for item in args.option:
        name, _, value = item.partition("=")
        options[name] = value
    storage = open_storage(args.url, **options)
    path = Path(args.log)
    writer = _Writer(path)
    try:
        log = parse_log(path)
        violations, counts = await check_ledger(storage, log, args.accounts, settled=args.settled)
        print(json.dumps({"violations": violations, **counts}), flush=True)
        if args.check_only:
            return 1 if violations else 0
        async with Runtime(storage, invocation_timeout=30.0) as runtime:
            runtime.register(NAMESPACE, LedgerAccount)
            client = _Client(runtime, writer, log)
            settled = 0 if args.no_settle else await _settle(client)
            print(json.dumps({"settled": settled}), flush=True)
            rng = random.Random(args.seed)
            counter = [0]

            async def run_client(number: int) -> None:
                crng = random.Random(rng.random())
                while args.ops < 0 or counter[0] < args.ops:
                    counter[0] += 1
                    op_id = f"{args.tag}.{number}.{counter[0]}"
                    amount = crng.randint(1, 100)
                    choice = crng.random()
                    target = f"acct{crng.randrange(args.accounts)}"
                    if choice < 0.4:
                        await client.apply(op_id, target, amount, "external")
                    elif choice < 0.6:
                        await client.apply(op_id, target, -amount, "external")
                    else:
                        source = f"acct{crng.randrange(args.accounts)}"
                        if source == target:
                            continue
                        await client.transfer(f"{op_id}-{target}-", source, target, amount)

            await asyncio.gather(*(run_client(c) for c in range(args.clients)))
            print(json.dumps({"done": counter[0], "retries": client.retries}), flush=True)
        return 0
    finally:
        writer.close()
        await storage.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kelpie.testing.ledger_process", description=__doc__.split("\n")[0]
    )
    parser.add_argument("url", help="storage URL, e.g. lmdb:///tmp/ledger")
    parser.add_argument("--log", required=True, help="the append-only operation log")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--accounts", type=int, default=4)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument(
        "--ops", type=int, default=-1, help="stop after N ops (-1: run until killed)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="r0", help="unique per run: prefixes every op id")
    parser.add_argument("--check-only", action="store_true")
    parser.add_argument("--settled", action="store_true", help="check the settled invariants too")
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="skip step 2: writers running at the same time must not settle each other's "
        "operations in flight (the log shows them unanswered)",
    )
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
