"""``kelpie demo``: run the bank under injected faults, then check its invariants.

Exit status: 0 when every invariant holds, 1 when one fails (or the run could
not finish), 2 for a bad argument or storage configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections import Counter
from typing import TextIO

from kelpie.demo.bank import (
    ACCOUNT_NAMESPACE,
    LEDGER_ID,
    AccountActor,
    LedgerActor,
    account_id,
)
from kelpie.demo.check import Audit, Invariant, audit, check, half_done_transfers
from kelpie.demo.client import BankClient, GaveUpError, Operation, make_operations
from kelpie.demo.faults import SeededFaults
from kelpie.demo.progress import Progress
from kelpie.dst.faults import FaultKind, FaultPlan, FaultSpec, FaultyStorage
from kelpie.errors import ConfigError, KelpieError
from kelpie.runtime.runtime import Runtime
from kelpie.storage.protocol import Storage
from kelpie.storage.registry import open_storage, resolve_url
from kelpie.storage.url import StorageURL

__all__ = ["add_arguments", "fault_plan", "run"]

_ACK_CHUNK = 2000  # acknowledged operations per ledger record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="storage URL (default: $KELPIE_STORAGE_URL, ./kelpie.toml, else lmdb://./kelpie-data)",
    )
    parser.add_argument("--accounts", type=int, default=10, metavar="N", help="default 10")
    parser.add_argument("--operations", type=int, default=500, metavar="N", help="default 500")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.05,
        metavar="P",
        help="probability that a storage commit fails, split between 'not applied', "
        "'applied but the reply was lost' and 'conflict'; reads fail at P/4 (default 0.05)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the operations and of the faults each one meets: a run on a fresh store "
        "repeats exactly (default: random)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        metavar="N",
        help="operations in flight (default 8); those of one account run in order",
    )


def fault_plan(rate: float) -> FaultPlan:
    """The demo's faults at ``rate``: commits fail three ways, reads fail a little."""
    if rate == 0:
        return FaultPlan.none()
    return FaultPlan.of(
        FaultSpec(FaultKind.CRASH_BEFORE_COMMIT, rate / 3),
        FaultSpec(FaultKind.CRASH_AFTER_COMMIT, rate / 3),
        FaultSpec(FaultKind.SPURIOUS_CONFLICT, rate / 3),
        FaultSpec(FaultKind.READ_FAIL, rate / 4, ops=frozenset({"get"})),
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo as ``kelpie demo`` does; return the exit status."""
    problem = None
    if args.accounts < 1 or args.accounts > 10_000:
        problem = "--accounts must be between 1 and 10000"
    elif args.operations < 0 or args.operations > 999_999:
        problem = "--operations must be between 0 and 999999"
    elif not 0.0 <= args.fault_rate <= 1.0:
        problem = "--fault-rate must be between 0 and 1"
    elif args.concurrency < 1:
        problem = "--concurrency must be at least 1"
    if problem is not None:
        print(f"kelpie demo: {problem}", file=sys.stderr)
        return 2
    seed: int = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    try:
        url = resolve_url(args.storage)
        shown = StorageURL.parse(url).render()
        storage = open_storage(url)
    except ConfigError as exc:
        print(f"kelpie demo: {exc}", file=sys.stderr)
        return 2
    demo = _Demo(storage, shown, args.accounts, args.operations, args.fault_rate, seed)
    demo.concurrency = args.concurrency
    try:
        return asyncio.run(demo.main())
    except (KelpieError, GaveUpError) as exc:
        print(f"kelpie demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kelpie demo: interrupted; run it again to continue and check", file=sys.stderr)
        return 130


class _Demo:
    def __init__(
        self, storage: Storage, shown: str, accounts: int, operations: int, rate: float, seed: int
    ) -> None:
        self.storage = storage
        self.shown = shown
        self.accounts = accounts
        self.operations = operations
        self.rate = rate
        self.seed = seed
        self.concurrency = 8
        self.out: TextIO = sys.stdout
        self.injector = SeededFaults(fault_plan(rate), f"kelpie-demo/{seed}")
        self.elapsed = 0.0
        self.problems: list[str] = []

    def _runtime(self, storage: Storage) -> Runtime:
        # No idle eviction: an actor reloaded after a quiet spell would shift its fault stream.
        runtime = Runtime(storage, idle_timeout=None)
        runtime.register(ACCOUNT_NAMESPACE, AccountActor)
        runtime.register(LEDGER_ID.namespace, LedgerActor)
        return runtime

    async def _read_all(self) -> Audit:
        """Every account and the ledger, read by a fault-free runtime that is then closed."""
        reader = self._runtime(self.storage)
        try:
            return await audit(BankClient(reader).invoke)
        finally:
            await reader.close()

    async def main(self) -> int:
        self._print(
            f"kelpie demo on {self.shown}: {self.accounts} accounts, "
            f"{self.operations:,} operations, fault rate {self.rate:g}, seed {self.seed}"
        )
        try:
            half_done = half_done_transfers(await self._read_all())
            runtime = self._runtime(FaultyStorage(self.storage, self.injector, name="demo"))
            client = BankClient(runtime)
            try:
                await self._workload(client, half_done)
            finally:
                await runtime.close()
            # Check what storage holds: a fresh runtime without faults reloads every actor.
            found = await self._read_all()
        finally:
            await self.storage.close()
        invariants = check(found)
        self._report(client, found, invariants)
        return 0 if all(i.passed for i in invariants) and not self.problems else 1

    async def _workload(
        self, client: BankClient, half_done: list[tuple[str, int, int, int]]
    ) -> None:
        begun = await client.invoke(
            LEDGER_ID, "begin_run", {"accounts": self.accounts}, f"begin/{uuid.uuid4().hex}"
        )
        run = begun["run"]
        if run == 1:
            self._print("run 1 on this storage")
        else:
            self._print(f"run {run} on this storage: continuing, the earlier runs are checked too")
        if half_done:
            # The deposit leg under the key the interrupted client would have retried with.
            for op_id, source, target, amount in half_done:
                payload = {"op": op_id, "amount": amount, "peer": source}
                await client.invoke(account_id(target), "deposit", payload, f"{op_id}/d")
            self._print(f"completed {len(half_done)} transfer(s) an earlier run left half-done")
        rng = random.Random(f"kelpie-demo/{self.seed}/run-{run}")
        operations = make_operations(rng, run, self.operations, self.accounts)
        started = time.perf_counter()
        await self._drive(client, operations)
        self.elapsed = time.perf_counter() - started
        await self._record(client, run)

    async def _drive(self, client: BankClient, operations: list[Operation]) -> None:
        """Run ``operations`` with ``concurrency`` in flight, those of one account in order.

        Each account sees its operations in the order they were generated, whatever
        the timing: balances, refusals and each actor's storage operations (hence the
        faults that strike them, ``SeededFaults``) are the same in every run of a seed.
        """
        progress = Progress(len(operations))
        pending = iter(operations)
        loop = asyncio.get_running_loop()
        last: dict[int, asyncio.Future[None]] = {}  # account -> its latest operation's end
        done = 0

        async def worker() -> None:
            nonlocal done
            for op in pending:
                if self.problems:
                    return
                accounts = {op.account} if op.peer is None else {op.account, op.peer}
                before = [last[a] for a in sorted(accounts) if a in last]
                finished: asyncio.Future[None] = loop.create_future()
                for account in accounts:
                    last[account] = finished
                try:
                    for earlier in before:
                        await earlier
                    if self.problems:
                        return
                    await client.perform(op)
                except GaveUpError as exc:
                    self.problems.append(str(exc))
                    return
                finally:
                    finished.set_result(None)
                done += 1
                retries = sum(client.retries.values())
                progress.update(done, f"{retries:,} retries")

        try:
            await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        finally:
            progress.close()

    async def _record(self, client: BankClient, run: int) -> None:
        """Store this run's acknowledged operations and totals in the ledger."""
        chunks = [client.acks[i : i + _ACK_CHUNK] for i in range(0, len(client.acks), _ACK_CHUNK)]
        try:
            for n, acks in enumerate(chunks):
                payload = {"run": run, "chunk": n, "acks": acks}
                await client.invoke(LEDGER_ID, "record_acks", payload, f"acks/{run}/{n}")
            summary = {
                "run": run,
                "acknowledged": len(client.acks),
                "deposited": client.deposited,
                "withdrawn": client.withdrawn,
                "abandoned": client.abandoned,
            }
            await client.invoke(LEDGER_ID, "finish_run", summary, f"finish/{run}")
        except GaveUpError as exc:
            self.problems.append(f"could not record run {run} in the ledger: {exc}")

    def _print(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def _report(self, client: BankClient, found: Audit, invariants: list[Invariant]) -> None:
        kinds = Counter(ack[1] for ack in client.acks)
        rejected = sum(1 for ack in client.acks if not ack[5])
        rate = client.invocations / self.elapsed if self.elapsed > 0 else 0.0
        retries = sum(client.retries.values())
        fired = sum(self.injector.fired.values())
        figures = [
            (
                "operations acknowledged",
                f"{len(client.acks):,}",
                f"{kinds['d']:,} deposits, {kinds['w']:,} withdrawals, "
                f"{kinds['t']:,} transfers; {rejected:,} refused for lack of funds",
            ),
            (
                "invocations",
                f"{client.invocations:,}",
                f"{rate:,.0f}/s over {self.elapsed:.1f} s",
            ),
            ("retries", f"{retries:,}", _breakdown(client.retries, _RETRY_NAMES)),
            ("faults injected", f"{fired:,}", _breakdown(self.injector.fired, {})),
            (
                "runs in storage",
                f"{found.ledger['finished']:,}",
                f"{found.ledger['acknowledged']:,} acknowledged operations in the ledger",
            ),
        ]
        self._print()
        for name, value, detail in figures:
            self._print(f"  {name:<24}{value:>9}   {detail}")
        self._print()
        width = max(len(i.name) for i in invariants)
        for inv in invariants:
            verdict = "PASS" if inv.passed else "FAIL"
            self._print(f"  {inv.name:<{width}}  {verdict}   {inv.detail}")
        for problem in self.problems:
            self._print(f"\n  run incomplete: {problem}")
        self._print()
        if all(i.passed for i in invariants) and not self.problems:
            self._print("all invariants hold")
        else:
            passed = all(i.passed for i in invariants)
            self._print("the run did not finish" if passed else "INVARIANTS VIOLATED")
            if self.problems:
                self._print("(the next run first completes any transfer left half-done)")


_RETRY_NAMES = {
    "CommitOutcomeUnknownError": "outcome unknown",
    "StorageUnavailableError": "unavailable",
    "TransactionConflictError": "conflict",
}


def _breakdown(counts: Counter[str], names: dict[str, str]) -> str:
    parts = [(names.get(kind, kind.replace("_", " ")), n) for kind, n in counts.items() if n]
    return ", ".join(f"{name} {n:,}" for name, n in sorted(parts))
