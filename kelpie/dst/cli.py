"""``kelpie dst``: run a storm of seeds from the command line.

``add_dst_arguments(parser)`` declares the options; ``run_dst_command(args)``
runs the storm, draws a progress bar on stderr, prints the summary table on
stdout and returns 1 if any seed broke an invariant (0 otherwise)::

    kelpie dst --seeds 100 --workload mixed --faults all --crashes
    kelpie dst --seed 42                      # replay one seed exactly
    kelpie dst --seeds 10000 --start 0 --crashes --quiet   # the soak
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from kelpie.dst.faults import FaultPlan
from kelpie.dst.harness import RUNTIMES, SeedResult, SimConfig
from kelpie.dst.storm import run_storm
from kelpie.dst.workloads import WORKLOADS
from kelpie.errors import ConfigError

__all__ = ["add_dst_arguments", "run_dst_command"]


def add_dst_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``kelpie dst`` options on ``parser``."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--seeds", type=int, default=100, metavar="N", help="run N seeds (default 100)"
    )
    which.add_argument("--seed", type=int, metavar="S", help="run (replay) only seed S")
    parser.add_argument(
        "--start", type=int, default=0, metavar="S", help="first seed of --seeds (default 0)"
    )
    parser.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        default="mixed",
        help="default: mixed (ledger accounts and registers in one run)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        default=None,
        help="a real backend (real time, not deterministic); default: memory:// in virtual time",
    )
    parser.add_argument(
        "--faults",
        metavar="SPEC",
        default="all",
        help="none | all | all*SCALE | KIND[:p=P][:ops=a|b][:after=N][:max=N][:delay=LO-HI]"
        "[:duration=S],...  (default: all)",
    )
    parser.add_argument(
        "--crashes",
        action="store_true",
        help="crash the whole process at random points, some while a commit batch is written",
    )
    parser.add_argument(
        "--no-group-commit",
        action="store_true",
        help="memory:// commits one at a time instead of in group-commit batches",
    )
    parser.add_argument(
        "--commit-latency",
        type=float,
        metavar="S",
        default=None,
        help="virtual seconds each commit batch waits (default: drawn per seed, 0-5 ms)",
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--steps", type=int, default=40, help="steps per client (default 40)")
    parser.add_argument(
        "--runtime",
        choices=sorted(RUNTIMES),
        default="kelpie",
        help="runtime under test (naive: the atomicity-gap foil)",
    )
    parser.add_argument(
        "--runtimes",
        type=int,
        choices=(1, 2, 3),
        default=None,
        help="runtime processes sharing the store (default: drawn per seed, 1-3)",
    )
    leases = parser.add_mutually_exclusive_group()
    leases.add_argument(
        "--leases",
        dest="leases",
        action="store_const",
        const=True,
        default=None,
        help="runtimes take leases (node ids); default: drawn per seed",
    )
    leases.add_argument("--no-leases", dest="leases", action="store_const", const=False)
    parser.add_argument(
        "--lease-seconds",
        type=float,
        metavar="S",
        default=None,
        help="lease length (default: drawn per seed, 0.5 or 1 s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        default=None,
        help="idle eviction after S virtual seconds; 0: none (default: drawn per seed)",
    )
    parser.add_argument(
        "--no-chaos", action="store_true", help="no random deactivations of active actors"
    )
    parser.add_argument(
        "--no-pauses", action="store_true", help="never pause a process (no zombies)"
    )
    parser.add_argument(
        "--idempotency-window",
        type=int,
        metavar="N",
        default=SimConfig.idempotency_window,
        help=f"the runtimes' idempotency window (default {SimConfig.idempotency_window})",
    )
    parser.add_argument(
        "--no-history",
        action="store_true",
        help="do not check the recorded histories for linearizability",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="with --seed: print every violation in full (history slices included)",
    )


class _Progress:
    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.done = 0
        self.failed = 0

    def __call__(self, result: SeedResult) -> None:
        self.done += 1
        self.failed += bool(result.violations)
        tty = self.stream.isatty()
        step = max(1, self.total // 20)
        if not tty and self.done % step and self.done != self.total:
            return  # a log file gets a line every 5%, not one per seed
        width = 30
        filled = width * self.done // max(1, self.total)
        bar = "#" * filled + "-" * (width - filled)
        prefix = "\r" if tty else ""
        self.stream.write(
            f"{prefix}[{bar}] {self.done:,}/{self.total:,} seeds, {self.failed:,} failing, "
            f"seed {result.seed}  "
        )
        if self.done == self.total or not tty:
            self.stream.write("\n")
        self.stream.flush()


def run_dst_command(args: argparse.Namespace) -> int:
    """Run ``kelpie dst``; the exit status is 1 on any violation, 2 on bad options."""
    try:
        faults = FaultPlan.parse(args.faults)
    except ConfigError as exc:
        print(f"kelpie dst: {exc}", file=sys.stderr)
        return 2
    if args.seed is not None:
        seeds = [args.seed]
    else:
        if args.seeds < 1:
            print("kelpie dst: --seeds must be at least 1", file=sys.stderr)
            return 2
        seeds = list(range(args.start, args.start + args.seeds))
    if args.commit_latency is not None and not args.commit_latency >= 0:
        print("kelpie dst: --commit-latency must be >= 0", file=sys.stderr)
        return 2
    if args.clients < 1 or args.steps < 0:
        print("kelpie dst: --clients must be >= 1 and --steps >= 0", file=sys.stderr)
        return 2
    if args.idempotency_window < 1:
        print("kelpie dst: --idempotency-window must be >= 1", file=sys.stderr)
        return 2
    for name in ("lease_seconds", "idle_timeout"):
        value = getattr(args, name)
        if value is not None and not value >= 0:
            print(f"kelpie dst: --{name.replace('_', '-')} must be >= 0", file=sys.stderr)
            return 2
    config = SimConfig(
        seed=seeds[0],
        faults=faults,
        crashes=args.crashes,
        group_commit=not args.no_group_commit,
        commit_latency=args.commit_latency,
        clients=args.clients,
        steps=args.steps,
        runtime=args.runtime,
        storage_url=args.storage,
        runtimes=args.runtimes,
        leases=args.leases,
        lease_seconds=args.lease_seconds or None,
        idle_timeout=args.idle_timeout,
        chaos=not args.no_chaos,
        pauses=not args.no_pauses,
        idempotency_window=args.idempotency_window,
        history=not args.no_history,
    )
    progress = None if args.quiet else _Progress(len(seeds), sys.stderr)
    storm = run_storm(seeds, config, args.workload, progress=progress)
    print(storm.summary())
    if args.seed is not None:
        result = storm.results[0]
        print(f"digest  {result.digest}")
        if args.verbose:
            for violation in result.violations:
                print()
                print(violation)
    return 0 if storm.ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m kelpie.dst.cli``: the same command without the ``kelpie`` wrapper."""
    parser = argparse.ArgumentParser(prog="kelpie dst", description=__doc__.splitlines()[0])
    add_dst_arguments(parser)
    return run_dst_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
