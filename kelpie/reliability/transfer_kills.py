"""Transfers by message between processes SIGKILLed at random moments, on one real store.

``kill_transfers`` runs ``nodes`` processes of ``kelpie.testing.transfer_node``
on one store (an LMDB directory, a redis-server: any URL every process can
open). Their clients debit accounts, each debit sending its credit with
``ctx.send``, and now and then open a one-shot reminder; the first process
also sets a repeating ``Clock`` reminder. A ``ServerKiller`` thread SIGKILLs
a random process at random moments and starts it again. Then every process
is killed, one fresh process runs until no account holds an outbox entry or
a reminder (the sweep delivers what the dead left), and the stored states
are judged against what the clients said (``I``/``M`` before, ``A``/``R``
after, on stdout, which outlives a SIGKILL):

- each debit applied at most once, only at its source, never a rejected one,
  and every acknowledged one applied;
- every applied debit's credit applied exactly once, at its target; no
  credit without its debit;
- each balance equals its history (initial, debits, credits, interest), and
  the total is the initial money plus the interest fired (conserved);
- every reminder opened fired exactly once; the Clock's fires name distinct
  due times on its cadence (``every`` apart, or whole multiples across a
  downtime).

``reminder_after_kill`` sets a one-shot and a repeating reminder in a
process, SIGKILLs it before the one-shot is due, and checks that the
processes started after it fire the one-shot exactly once and keep the
repeating one's cadence without a due time fired twice.

Test-harness code: it may use the wall clock and its own seeded ``random``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kelpie.dst.inspect import KelpieInspector
from kelpie.dst.workloads.transfers import INITIAL, TransferState
from kelpie.reliability.faults import ServerKiller
from kelpie.storage.registry import open_storage
from kelpie.testing.redis_server import signal_and_wait
from kelpie.testing.transfer_node import CLOCK, ClockState, account

__all__ = [
    "ReminderKillReport",
    "TransferKillReport",
    "clock_violations",
    "kill_transfers",
    "reminder_after_kill",
]

_GUARD = 60.0  # a process that takes longer than this to start or settle is a hang
_CADENCE_TOLERANCE = 1e-6


@dataclass
class TransferKillReport:
    seed: int
    kills: int = 0
    """Processes SIGKILLed while running (the final kill of every survivor included)."""
    debits_issued: int = 0
    debits_acked: int = 0
    debits_rejected: int = 0
    debits_applied: int = 0
    in_doubt: int = 0
    """Debits whose client never heard back (killed, or gave up): their outcome was unknown."""
    in_doubt_applied: int = 0
    credits_applied: int = 0
    reminders_opened: int = 0
    reminders_fired: int = 0
    clock_fires: int = 0
    clock_processes: int = 0
    """How many processes fired the repeating Clock reminder."""
    left_pending: int = 0
    """Outbox entries and reminders the killed processes left, found by the settling one."""
    settle_seconds: float = 0.0
    violations: list[str] = field(default_factory=list)


@dataclass
class ReminderKillReport:
    seed: int
    once_fired_by: list[str] = field(default_factory=list)
    clock_fires: int = 0
    clock_fires_after_kill: int = 0
    beats_by_process: dict[str, int] = field(default_factory=dict)
    """The repeating reminder's fires per process (``--tag``)."""
    violations: list[str] = field(default_factory=list)


@dataclass
class _Said:
    """What the clients said, over every process's stdout."""

    debits: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    reminders: dict[str, str] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)


class _Node:
    """One ``transfer_node`` process at a time under ``tag`` + a round number."""

    def __init__(
        self, url: str, logs: Path, name: str, rng: random.Random, extra: list[str]
    ) -> None:
        self.url, self.logs, self.name, self.rng, self.extra = url, logs, name, rng, extra
        self.rounds = 0
        self.tag = ""
        """The running (or last) process's ``--tag``: ``name`` + ``r`` + round."""
        self.process: subprocess.Popen[bytes] | None = None
        self.out: Path | None = None
        self.crashes: list[str] = []

    def start(self) -> None:
        self.rounds += 1
        tag = self.tag = f"{self.name}r{self.rounds}"
        self.out = self.logs / f"{tag}.out"
        command = [sys.executable, "-m", "kelpie.testing.transfer_node", self.url, "--tag", tag]
        command += ["--seed", str(self.rng.randrange(2**31)), *self.extra]
        with open(self.out, "wb") as out, open(self.logs / f"{tag}.err", "wb") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err)
        self.extra = [a for a in self.extra if not a.startswith("--set-clock=")]  # once
        deadline = time.monotonic() + _GUARD
        while b"READY\n" not in self.out.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{tag} did not start: {self._stderr_tail()}")
            time.sleep(0.01)

    def _stderr_tail(self) -> str:
        assert self.out is not None
        return self.out.with_suffix(".err").read_text(errors="replace")[-2000:]

    def kill(self) -> bool:
        """SIGKILL the running process; False if it had exited by itself (a crash)."""
        process, self.process = self.process, None
        if process is None:
            return False
        if process.poll() is not None:
            self.crashes.append(f"{self.out} exited {process.returncode}: {self._stderr_tail()}")
            return False
        signal_and_wait(process, signal.SIGKILL, _GUARD)
        return True


class _AnyNode:
    """What ``ServerKiller`` kills: a random one of the nodes, started again after."""

    def __init__(self, nodes: list[_Node], rng: random.Random) -> None:
        self.nodes, self.rng = nodes, rng
        self.victim = nodes[0]
        self.kills = 0

    def kill(self) -> None:
        self.victim = self.rng.choice(self.nodes)
        self.kills += self.victim.kill()

    def start(self) -> None:
        self.victim.start()


def _read_said(logs: Path) -> _Said:
    said = _Said()
    for path in sorted(logs.glob("*.out")):
        text = path.read_text(errors="replace")
        for line in text.split("\n")[:-1]:  # after the last newline: torn or empty
            parts = line.split(" ")
            if parts[0] == "I" and len(parts) == 5:
                said.debits[parts[1]] = (parts[2], parts[3], int(parts[4]))
            elif parts[0] == "M" and len(parts) == 4:
                said.reminders[parts[1]] = parts[2]
            elif parts[0] == "A" and len(parts) == 2:
                said.acked.add(parts[1])
            elif parts[0] == "R" and len(parts) == 2:
                said.rejected.add(parts[1])
    return said


def clock_violations(fired: list[list[Any]], name: str, every: float | None) -> list[str]:
    """A reminder's fires (``[name, due, tag]``): distinct due times, ``every`` apart or
    whole multiples of it (periods missed while no process ran are skipped)."""
    dues = [entry[1] for entry in fired if entry[0] == name]
    problems = []
    if any(due is None for due in dues):
        problems.append(f"{name}: a fire found no record")
    doubled = sorted(due for due, n in Counter(dues).items() if n > 1)
    if doubled:
        problems.append(f"{name}: due times fired twice: {doubled[:5]}")
    if every is None:
        return problems + ([f"{name}: fired {len(dues)} times"] if len(dues) > 1 else [])
    for before, after in itertools.pairwise(dues):
        if before is None or after is None:
            continue
        periods = (after - before) / every
        off = abs(periods - round(periods)) > _CADENCE_TOLERANCE * max(1.0, periods)
        if after <= before or off:
            problems.append(f"{name}: fired for {before} then {after}: off its {every} s cadence")
    return problems


async def _judge(url: str, accounts: int, said: _Said, report: TransferKillReport) -> None:
    inspector = KelpieInspector()
    storage = open_storage(url)
    try:
        states = {}
        for number in range(accounts):
            actor = account(number)
            state = await inspector.state(storage, actor, TransferState)
            states[actor.id] = TransferState() if state is None else state
        clock = await inspector.state(storage, CLOCK, ClockState)
    finally:
        await storage.close()
    bad = report.violations
    sent = Counter(x for s in states.values() for x in s.sent)
    received = Counter(x for s in states.values() for x in s.received)
    interest = Counter(x for s in states.values() for x in s.interest)
    for name, state in sorted(states.items()):
        history = INITIAL + len(state.interest)
        for op_id in state.sent:
            issued = said.debits.get(op_id)
            if issued is None or issued[0] != name:
                bad.append(f"{name}: debit {op_id} applied but never issued for this account")
            else:
                history -= issued[2]
            if op_id in said.rejected:
                bad.append(f"{name}: debit {op_id} was rejected but is applied")
        for op_id in state.received:
            issued = said.debits.get(op_id)
            if issued is None or issued[1] != name:
                bad.append(f"{name}: credit {op_id} applied but not addressed to this account")
            else:
                history += issued[2]
        if history != state.balance:
            bad.append(f"{name}: balance {state.balance}, its history says {history}")
        if state.balance < 0:
            bad.append(f"{name}: negative balance {state.balance}")
        for op_id in state.interest:
            if said.reminders.get(op_id) != name or op_id not in state.reminders:
                bad.append(f"{name}: reminder {op_id} fired but was not opened here")
    for what, counts in (("debit", sent), ("credit", received), ("reminder", interest)):
        twice = sorted(op for op, n in counts.items() if n > 1)
        if twice:
            bad.append(f"{what}s applied more than once: {twice[:5]}")
    lost = sorted(op for op in said.acked if op in said.debits and op not in sent)
    if lost:
        bad.append(f"acknowledged debits not applied: {lost[:5]}")
    if sorted(set(sent) - set(received)):
        bad.append(f"debits whose credit was lost: {sorted(set(sent) - set(received))[:5]}")
    if sorted(set(received) - set(sent)):
        bad.append(f"credits without a debit: {sorted(set(received) - set(sent))[:5]}")
    opened = {op for s in states.values() for op in s.reminders}
    lost = sorted(op for op in said.acked if op in said.reminders and op not in opened)
    if lost:
        bad.append(f"acknowledged reminders not stored: {lost[:5]}")
    if sorted(opened - set(interest)):
        bad.append(f"reminders that never fired: {sorted(opened - set(interest))[:5]}")
    total = sum(s.balance for s in states.values())
    if total != INITIAL * accounts + sum(interest.values()):
        bad.append(f"money not conserved: total {total}, interest {sum(interest.values())}")
    fired = [] if clock is None else clock.fired
    bad += clock_violations(fired, "beat", 0.25)
    done = said.acked | said.rejected
    report.debits_issued = len(said.debits)
    report.debits_acked = len(said.acked & set(said.debits))
    report.debits_rejected = len(said.rejected)
    report.debits_applied = len(sent)
    report.in_doubt = sum(op not in done for op in said.debits)
    report.in_doubt_applied = sum(op not in done for op in sent)
    report.credits_applied = sum(received.values())
    report.reminders_opened = len(opened)
    report.reminders_fired = sum(interest.values())
    report.clock_fires = len(fired)
    report.clock_processes = len({entry[2] for entry in fired})


def _settle(url: str, logs: Path, common: list[str], within: float) -> dict[str, Any]:
    """A fresh process (no clients) runs until the accounts hold nothing pending."""
    command = [sys.executable, "-m", "kelpie.testing.transfer_node", url, "--tag", "settle"]
    command += [*common, "--clients", "0", "--quiesce", str(within)]
    done = subprocess.run(command, capture_output=True, timeout=within + _GUARD, check=False)
    (logs / "settle.out").write_bytes(done.stdout)
    lines = done.stdout.decode(errors="replace").splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("{"):
        return {"error": f"exited {done.returncode}: {done.stderr.decode()[-2000:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def kill_transfers(
    url: str,
    directory: Path,
    kills: int,
    *,
    seed: int = 0,
    nodes: int = 2,
    accounts: int = 4,
    clients: int = 3,
    up: tuple[float, float] = (0.2, 1.2),
    down: tuple[float, float] = (0.0, 0.3),
    settle_within: float = 30.0,
    lease_seconds: float | None = None,
) -> TransferKillReport:
    """``kills`` random SIGKILLs of ``nodes`` transfer processes on ``url``, then judge.

    ``lease_seconds``: the processes are nodes with leases (a killed one's leases
    block the others until they expire); without, they share actors by version checks.
    """
    rng = random.Random(seed)
    report = TransferKillReport(seed)
    logs = directory / "transfer-logs"
    logs.mkdir(parents=True, exist_ok=True)
    common = ["--accounts", str(accounts), "--clients", str(clients)]
    if lease_seconds is not None:
        common += ["--lease-seconds", str(lease_seconds)]
    running = [
        _Node(url, logs, f"n{n}", random.Random(rng.random()), list(common)) for n in range(nodes)
    ]
    running[0].extra.append("--set-clock=beat:0.25:0.25")
    target = _AnyNode(running, random.Random(rng.random()))
    try:
        for node in running:
            node.start()
        killer = ServerKiller(target, kills, random.Random(rng.random()), up=up, down=down)
        killer.start()
        killer.join()
        if killer.error is not None:
            report.violations.append(f"the killer stopped: {killer.error!r}")
    finally:
        for node in running:
            report.kills += node.kill()
    report.kills += target.kills
    for node in running:
        report.violations += [f"exited by itself: {crash}" for crash in node.crashes]
    settled = _settle(url, logs, common, settle_within)
    if "error" in settled or settled.get("pending"):
        report.violations.append(f"not settled within {settle_within} s: {settled}")
    report.left_pending = int(settled.get("found", 0))
    report.settle_seconds = float(settled.get("waited", 0.0))
    asyncio.run(_judge(url, accounts, _read_said(logs), report))
    return report


def reminder_after_kill(
    url: str,
    directory: Path,
    *,
    seed: int = 0,
    every: float = 0.2,
    once_after: float = 1.5,
    lease_seconds: float | None = None,
) -> ReminderKillReport:
    """A process sets reminders and is SIGKILLed before the one-shot is due; two later
    processes (one of them SIGKILLed too) must fire it exactly once and keep the cadence.

    ``lease_seconds``: the processes are nodes with leases (each new one waits for
    the killed one's lease on the actor to expire)."""
    rng = random.Random(seed)
    report = ReminderKillReport(seed)
    logs = directory / "reminder-logs"
    logs.mkdir(parents=True, exist_ok=True)
    sets = [f"--set-clock=once:{once_after}", f"--set-clock=beat:{every}:{every}"]
    extra = ["--clients", "0", *sets]
    if lease_seconds is not None:
        extra += ["--lease-seconds", str(lease_seconds)]
    node = _Node(url, logs, "r", rng, extra)
    later: list[str] = []
    try:
        node.start()  # sets both reminders, then says READY
        setter = node.tag
        time.sleep(rng.uniform(0.2, 0.4) * once_after)  # a few beats; the one-shot not due
        node.kill()
        time.sleep(once_after)  # the one-shot falls due while no process runs
        # With leases a new node first watches the killed one's lease expire (one sweep
        # period, about 1 s, at least lease_seconds) before it may fire.
        takeover = 0.0 if lease_seconds is None else lease_seconds + 1.0
        for _ in range(2):
            node.start()
            later.append(node.tag)
            time.sleep(takeover + rng.uniform(4, 8) * every)
            node.kill()
    finally:
        node.kill()
    report.violations += [f"exited by itself: {crash}" for crash in node.crashes]

    async def read() -> ClockState | None:
        storage = open_storage(url)
        try:
            state: ClockState | None = await KelpieInspector().state(storage, CLOCK, ClockState)
            return state
        finally:
            await storage.close()

    clock = asyncio.run(read())
    fired = [] if clock is None else clock.fired
    report.once_fired_by = [entry[2] for entry in fired if entry[0] == "once"]
    if len(report.once_fired_by) != 1 or report.once_fired_by[0] == setter:
        report.violations.append(
            f"the one-shot set by {setter} (killed before it was due) fired by "
            f"{report.once_fired_by}"
        )
    report.violations += clock_violations(fired, "once", None)
    report.violations += clock_violations(fired, "beat", every)
    beats = [entry for entry in fired if entry[0] == "beat"]
    report.clock_fires = len(beats)
    report.clock_fires_after_kill = sum(entry[2] != setter for entry in beats)
    report.beats_by_process = dict(Counter(entry[2] for entry in beats))
    idle = [tag for tag in later if report.beats_by_process.get(tag, 0) < 2]
    if idle:
        report.violations.append(f"the repeating reminder did not go on in {idle}: {beats}")
    return report
