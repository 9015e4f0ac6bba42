"""The reliability soak: real faults on real backends, at scale, with a figure table.

::

    python -m kelpie.reliability.soak --lmdb-kills 1000 --redis-cuts 1000 \\
        --redis-restarts 20 --postgres-cuts 1000 --postgres-kills 20 --fuzz 10000

runs, on loopback only and in a temporary directory:

- ``--lmdb-kills N``: N ledger writer processes on one LMDB directory
  (``sync=true``), each SIGKILLed at a random moment and checked by the next
  fresh process; then two writers at once on a second directory;
- ``--redis-cuts N``: N commits cut by the TCP proxy, spread evenly over the
  four cut points, plus ``--ledger-runs`` ledger runs through a proxy cutting
  commits at random points;
- ``--redis-restarts N``: ``redis-server`` (AOF, ``appendfsync always``)
  SIGKILLed N times under the ledger and restarted, plus one outage under a
  live runtime;
- ``--postgres-cuts N``: N commits cut by the PostgreSQL proxy, spread evenly
  over its two cut points (just before ``COMMIT`` reaches the server, just after
  it committed), every 5th a ``delete_actor``;
- ``--postgres-kills N``: the whole PostgreSQL server (``fsync`` on) SIGKILLed
  N times under the ledger and restarted. Without PostgreSQL installed both
  are skipped: a row says "not run" and why, and it does not fail the soak;
- ``--fuzz N``: N hostile inputs on ``lmdb://``, and wrong Redis passwords.

It prints one row per scenario (count, violations, lost acknowledged
commits) and exits 1 unless both columns are 0 everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kelpie.reliability.hostile import Fuzzer, password_leaks, wrong_passwords
from kelpie.reliability.lmdb_kills import kill_writers, two_writers
from kelpie.reliability.postgres_faults import cut_commits as pg_cut_commits
from kelpie.reliability.postgres_faults import ledger_through_kills
from kelpie.reliability.redis_cuts import CutReport, cut_commits, ledger_through_cuts
from kelpie.reliability.redis_restarts import ledger_through_restarts, outage
from kelpie.testing.ports import free_port
from kelpie.testing.postgres_proxy import PgCut
from kelpie.testing.postgres_server import PostgresServer, missing_postgres
from kelpie.testing.redis_server import RedisServer
from kelpie.testing.tcp_proxy import CutPoint

__all__ = ["Row", "main", "run_soak"]


@dataclass
class Row:
    scenario: str
    count: int
    violations: int = 0
    lost: int = 0
    note: str = ""


@dataclass
class SoakResult:
    rows: list[Row] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(row.violations == 0 and row.lost == 0 for row in self.rows)

    def add(self, row: Row, messages: Sequence[str]) -> None:
        self.rows.append(row)
        self.messages += [f"{row.scenario}: {m}" for m in messages]

    def table(self) -> str:
        lines = [
            f"{'scenario':<46} {'count':>7} {'violations':>10} {'lost acks':>9}  note",
            "-" * 90,
        ]
        for row in self.rows:
            lines.append(
                f"{row.scenario:<46} {row.count:>7} {row.violations:>10} {row.lost:>9}  {row.note}"
            )
        lines.append("-" * 90)
        total_v = sum(r.violations for r in self.rows)
        total_l = sum(r.lost for r in self.rows)
        lines.append(f"{'total':<46} {'':>7} {total_v:>10} {total_l:>9}  {self.seconds:.0f} s")
        return "\n".join(lines)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_soak(args: argparse.Namespace, workdir: Path) -> SoakResult:
    result = SoakResult()
    started = time.perf_counter()
    seed: int = args.seed

    if args.lmdb_kills:
        _say(f"LMDB: {args.lmdb_kills} writer kills ...")
        kills = kill_writers(
            workdir / "lmdb-kills",
            args.lmdb_kills,
            seed=seed,
            progress=lambda n: _say(f"  {n} kills") if n % 50 == 0 else None,
        )
        result.add(
            Row(
                "LMDB writer SIGKILLed (sync=true)",
                kills.kills,
                len(kills.violations),
                kills.lost_acks,
                f"{kills.acknowledged} acked ops checked",
            ),
            kills.violations,
        )
        both = two_writers(workdir / "lmdb-two", ops=300, seed=seed)
        result.add(
            Row(
                "LMDB two writer processes, one directory",
                2,
                len(both.violations),
                both.lost_acks,
                f"{both.acknowledged} acked ops, {both.retries} conflicts retried",
            ),
            both.violations,
        )

    if args.redis_cuts or args.redis_restarts or args.ledger_runs:
        with RedisServer(workdir / "redis", appendonly=True, appendfsync="always") as server:
            if args.redis_cuts:
                _say(f"Redis: {args.redis_cuts} cut commits ...")
                cuts = asyncio.run(cut_commits(server.port, args.redis_cuts, seed=seed))
                for point in CutPoint:
                    _add_cut_row(result, "Redis", point.value, cuts.cuts[point], cuts)
            runs = args.ledger_runs
            if runs:
                _say(f"Redis: {runs} ledger runs through a cutting proxy ...")
                total = CutReport()
                for run in range(runs):
                    report, _ = ledger_through_cuts(server.port, seed=seed * 1000 + run)
                    total.merge(report)
                result.add(
                    Row(
                        f"Redis cuts under the ledger ({runs} runs)",
                        sum(total.cuts.values()),
                        len(total.violations),
                        total.lost_acks,
                        f"{total.ledger_acknowledged} acked ops; "
                        + ", ".join(f"{k} {v}" for k, v in sorted(total.cuts.items())),
                    ),
                    total.violations,
                )
            if args.redis_restarts:
                _say(f"Redis: {args.redis_restarts} SIGKILL + restarts under the ledger ...")
                restarts = ledger_through_restarts(server, args.redis_restarts, seed=seed)
                result.add(
                    Row(
                        "Redis SIGKILL + restart (AOF always)",
                        restarts.restarts,
                        len(restarts.violations),
                        restarts.lost_acks,
                        f"{restarts.acknowledged} acked ops",
                    ),
                    restarts.violations,
                )
                down = asyncio.run(outage(server))
                result.add(
                    Row(
                        "Redis down: invocations fail, then recover",
                        6,
                        len(down.violations),
                        0,
                        f"slowest failure {down.slowest_failure * 1000:.0f} ms",
                    ),
                    down.violations,
                )

    if args.postgres_cuts or args.postgres_kills:
        _postgres(args, result)

    if args.fuzz:
        _say(f"Hostile input: {args.fuzz} examples ...")
        fuzzer = Fuzzer(f"lmdb://{workdir / 'fuzz'}", seed=seed)
        try:
            fuzz = fuzzer.run(args.fuzz, str(workdir / "fuzz-options"))
        finally:
            fuzzer.close()
        result.add(
            Row(
                "Hostile inputs fuzzed (lmdb)",
                fuzz.inputs,
                len(fuzz.violations),
                0,
                f"{fuzz.rejected} named errors",
            ),
            fuzz.violations,
        )
        right = "Right-Pa55word!"
        wrong = wrong_passwords(max(5, args.fuzz // 500), random.Random(seed))
        with RedisServer(workdir / "redis-pw", password=right) as server:
            count, leaks = asyncio.run(
                password_leaks(server.port, right, wrong, down_port=free_port())
            )
        result.add(Row("Redis passwords: right, wrong, server down", count, len(leaks)), leaks)

    result.seconds = time.perf_counter() - started
    return result


class _Cuts(Protocol):
    @property
    def outcomes(self) -> Mapping[str, int]:
        """``"<cut point>:<what the caller saw>"`` -> how often."""

    @property
    def violations(self) -> Sequence[str]: ...


def _add_cut_row(result: SoakResult, backend: str, point: str, count: int, cuts: _Cuts) -> None:
    """One row for the commits cut at ``point``: what callers saw, and its violations."""
    outcomes = ", ".join(
        f"{name.split(':')[1]} {n}"
        for name, n in sorted(cuts.outcomes.items())
        if name.startswith(point + ":")
    )
    bad = [v for v in cuts.violations if f"at {point} " in v]
    lost = sum("acknowledged but not stored" in v for v in bad)
    result.add(Row(f"{backend} connection cut {point}", count, len(bad), lost, outcomes), bad)


def _postgres(args: argparse.Namespace, result: SoakResult) -> None:
    missing = missing_postgres()
    if missing is not None:
        _say(f"PostgreSQL: not run: {missing}")
        result.add(Row("PostgreSQL cuts and SIGKILLs", 0, note=f"not run: {missing}"), [])
        return
    # Its own temporary directory, not the work directory: as root the server runs
    # as an unprivileged user, who cannot enter the work directory (mode 0700).
    with PostgresServer() as server:
        if args.postgres_cuts:
            _say(f"PostgreSQL: {args.postgres_cuts} cut commits ...")
            cuts = asyncio.run(
                pg_cut_commits(server, args.postgres_cuts, seed=args.seed, delete_every=5)
            )
            for point in PgCut:
                _add_cut_row(result, "PostgreSQL", point.value, cuts.cuts[point.value], cuts)
        if args.postgres_kills:
            _say(f"PostgreSQL: {args.postgres_kills} SIGKILL + restarts under the ledger ...")
            kills = ledger_through_kills(server, args.postgres_kills, seed=args.seed)
            result.add(
                Row(
                    "PostgreSQL server SIGKILL + restart",
                    kills.restarts,
                    len(kills.violations),
                    kills.lost_acks,
                    f"{kills.acknowledged} acked ops",
                ),
                kills.violations,
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kelpie.reliability.soak",
        description="Real faults on real backends; prints a figure table.",
    )
    parser.add_argument("--lmdb-kills", type=int, default=100)
    parser.add_argument("--redis-cuts", type=int, default=100)
    parser.add_argument(
        "--ledger-runs", type=int, default=None, help="default: redis-cuts / 50, at least 1"
    )
    parser.add_argument("--redis-restarts", type=int, default=5)
    parser.add_argument("--postgres-cuts", type=int, default=100)
    parser.add_argument("--postgres-kills", type=int, default=5)
    parser.add_argument("--fuzz", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.ledger_runs is None:
        args.ledger_runs = max(1, args.redis_cuts // 50) if args.redis_cuts else 0
    workdir = Path(tempfile.mkdtemp(prefix="kelpie-soak-"))
    try:
        result = run_soak(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"kelpie reliability soak (seed {args.seed}): --lmdb-kills {args.lmdb_kills} "
        f"--redis-cuts {args.redis_cuts} --ledger-runs {args.ledger_runs} "
        f"--redis-restarts {args.redis_restarts} --postgres-cuts {args.postgres_cuts} "
        f"--postgres-kills {args.postgres_kills} --fuzz {args.fuzz}"
    )
    print(result.table())
    for message in result.messages[:30]:
        print(f"  - {message}")
    if len(result.messages) > 30:
        print(f"  ... and {len(result.messages) - 30} more")
    print("OK" if result.ok else "FAILED")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
