"""A ledger writer process on an LMDB directory (or an SQLite file), SIGKILLed at random moments.

Each round starts ``python -m kelpie.testing.ledger_process`` on the
directory. That fresh process first reopens the directory and checks every
ledger invariant against the append-only operation log (no torn commit, every
acknowledged commit present, nothing applied twice, balances equal their
history) and prints the result; it then settles what the killed writer left in
doubt and runs the workload until this module SIGKILLs it after a random
delay. After the last round one more process settles and checks the settled
invariants (every debit credited, money conserved). ``two_writers`` runs two
such processes on one directory at once and checks no update was lost.
``backend="sqlite"`` runs both on ``sqlite://directory/data.db`` instead
(``sync`` selects ``sync=full`` or ``sync=normal``).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["KillReport", "kill_writers", "two_writers"]

_GUARD = 120.0  # a child that takes longer than this to answer is a hang (a violation)


@dataclass
class KillReport:
    kills: int = 0
    """Writers SIGKILLed while running and checked afterwards by a fresh process."""
    acknowledged: int = 0
    violations: list[str] = field(default_factory=list)
    lost_acks: int = 0
    retries: int = 0
    """Storage errors (conflicts between writers included) the writers retried."""


def _store(directory: Path, backend: str, sync: bool) -> tuple[str, list[str]]:
    """The URL of the store under ``directory`` and the ``--option`` arguments for ``sync``."""
    if backend == "lmdb":
        url = f"lmdb://{directory.resolve() / 'data'}"
        return url, ["--option", f"sync={'true' if sync else 'false'}"]
    if backend == "sqlite":
        url = f"sqlite://{directory.resolve() / 'data.db'}"
        return url, ["--option", f"sync={'full' if sync else 'normal'}"]
    raise ValueError(f"unknown backend {backend!r}: lmdb or sqlite")


def _command(url: str, log: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kelpie.testing.ledger_process", url, "--log", str(log), *extra]


def _read_json(stream: IO[str], child: subprocess.Popen[str]) -> dict[str, object]:
    line = stream.readline()
    if not line:
        child.wait(timeout=_GUARD)
        stderr = child.stderr.read() if child.stderr is not None else ""
        raise RuntimeError(f"the ledger process exited ({child.returncode}): {stderr[-2000:]}")
    result: dict[str, object] = json.loads(line)
    return result


def _judge(report: KillReport, what: str, result: dict[str, object]) -> None:
    violations = result.get("violations", [])
    assert isinstance(violations, list)
    report.violations += [f"{what}: {v}" for v in violations]
    lost = result.get("lost", 0)
    assert isinstance(lost, int)
    report.lost_acks += lost
    acked = result.get("acked", 0)
    assert isinstance(acked, int)
    report.acknowledged = max(report.acknowledged, acked)


def _finish(report: KillReport, url: str, log: Path, options: Sequence[str]) -> None:
    """Settle in a fresh process, then check the settled invariants in another."""
    for extra in (["--ops", "0", "--tag", "settle"], ["--check-only", "--settled"]):
        done = subprocess.run(
            _command(url, log, *options, *extra),
            capture_output=True,
            text=True,
            timeout=_GUARD,
            check=False,
        )
        lines = done.stdout.splitlines()
        if not lines:
            report.violations.append(f"final {extra[0]} run printed nothing: {done.stderr[-2000:]}")
            continue
        _judge(report, f"final check ({' '.join(extra)})", json.loads(lines[0]))
        if done.returncode != 0:
            report.violations.append(f"final {extra[0]} run exited {done.returncode}")


def kill_writers(
    directory: Path,
    kills: int,
    *,
    seed: int = 0,
    sync: bool = True,
    max_delay: float = 0.4,
    progress: Callable[[int], None] | None = None,
    backend: str = "lmdb",
) -> KillReport:
    """``kills`` rounds of start, check, run, SIGKILL on the store in ``directory``."""
    rng = random.Random(seed)
    report = KillReport()
    url, options = _store(directory, backend, sync)
    log = directory / "ledger.log"
    for number in range(kills):
        child = subprocess.Popen(
            _command(url, log, *options, "--tag", f"k{number}", "--seed", str(rng.random())[2:]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            _judge(report, f"after kill {number}", _read_json(child.stdout, child))
            time.sleep(rng.uniform(0.0, max_delay))
            if child.poll() is not None:
                stderr = child.stderr.read() if child.stderr is not None else ""
                report.violations.append(
                    f"writer {number} exited by itself ({child.returncode}): {stderr[-2000:]}"
                )
                continue
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=_GUARD)
            report.kills += 1
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
        if progress is not None:
            progress(number + 1)
    _finish(report, url, log, options)
    return report


def two_writers(
    directory: Path, ops: int = 150, *, seed: int = 0, backend: str = "lmdb"
) -> KillReport:
    """Two processes run the ledger on the same store at once; no update is lost.

    Neither settles what the log shows unanswered when it starts: that is the
    other writer's work in flight, not a dead writer's. Settling it raced the
    owner (one process logged the operation rejected while the other applied
    it, both correctly, and the check saw "rejected but is applied"). The
    final settle run, once both have exited, finishes what is left.
    """
    report = KillReport()
    url, options = _store(directory, backend, True)
    log = directory / "ledger.log"
    children = [
        subprocess.Popen(
            _command(
                url,
                log,
                *options,
                "--no-settle",
                *("--ops", str(ops), "--tag", f"w{n}", "--seed", f"{seed}{n}"),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    for number, child in enumerate(children):
        stdout, stderr = child.communicate(timeout=_GUARD * 2)
        if child.returncode != 0:
            report.violations.append(f"writer {number} exited {child.returncode}: {stderr[-2000:]}")
        done = [json.loads(line) for line in stdout.splitlines() if '"done"' in line]
        if not done:
            report.violations.append(f"writer {number} did not finish: {stdout[-500:]}")
        else:
            report.retries += int(done[0].get("retries", 0))
    _finish(report, url, log, options)
    return report
