"""Mutation testing of the simulator: plant each bug, run the storm, see it caught.

``python -m kelpie.dst.mutants`` (or ``scripts/mutants``) proves the
simulator's power. For each mutant of ``kelpie.dst.mutant_list`` it copies the
``kelpie`` package to a temporary directory, replaces the mutant's original
text (which must occur exactly once: when the code moves, the script fails and
names the mutant), and runs the storm in a child process whose ``PYTHONPATH``
is that copy, stopping at the first failing seed. The unmutated code runs over
the same seeds and must pass. It prints a table and exits 0 only when every
mutant was caught and the clean run passed::

    python -m kelpie.dst.mutants                      # every mutant, 100 seeds
    python -m kelpie.dst.mutants --only fence_trusts_cache --seeds 30
    python -m kelpie.dst.mutants --list
    python -m kelpie.dst.mutants --clients 16 --steps 60   # any `kelpie dst` option

The storm is whatever ``kelpie dst`` runs with the given options (default:
``--faults all --crashes``): the child calls ``kelpie.dst.cli.main`` with
``run_storm`` told to stop at the first failing seed. A mutant counts as
caught only when the simulator reports a violation -- a deadlock or time-limit
report of the simulated loop included; a child killed by the wall-clock
``--timeout`` is *not* caught.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from kelpie.dst.mutant_list import MUTANTS, Mutant
from kelpie.dst.mutant_run import (
    CHILD_FLAG,
    DEFAULT_STORM,
    MutantError,
    MutantResult,
    child,
    describe_source,
    export_revision,
    find_mutants,
    locate,
    plant,
    run_mutants,
)

__all__ = [
    "DEFAULT_STORM",
    "MUTANTS",
    "MutantError",
    "MutantResult",
    "find_mutants",
    "locate",
    "main",
    "plant",
    "render_table",
    "run_mutants",
]

# -- the report -----------------------------------------------------------------


def render_table(results: Sequence[MutantResult], seeds: int) -> str:
    """A plain-text table of the results."""
    header = ("mutant", "where", "caught", "seed", "seeds run", "time", "what caught it")
    rows: list[tuple[str, ...]] = []
    for r in results:
        if r.name == "(clean)":
            caught = "FAILED" if r.caught else "passed"
        else:
            caught = "yes" if r.caught else "NO"
        if r.caught and r.how == "simulator":
            caught += " (sim)"
        elif r.caught and r.how == "storm":
            caught += " (storm)"
        elif r.how in ("timeout", "error"):
            caught += f" ({r.how})"
        rows.append(
            (
                r.name,
                r.where,
                caught,
                "-" if r.first_failing_seed is None else str(r.first_failing_seed),
                f"{r.seeds_run}/{seeds}",
                f"{r.wall_time:.1f}s",
                r.caught_by,
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header[:-1])]
    lines = []
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 14)
    return "\n".join(lines)


def _verdict(results: Sequence[MutantResult]) -> tuple[bool, list[str]]:
    problems = []
    for r in results:
        if r.name == "(clean)":
            if r.caught or r.how in ("timeout", "error"):
                problems.append(f"the clean run did not pass: {r.caught_by}")
        elif not r.caught:
            problems.append(f"mutant {r.name} was not caught ({r.caught_by})")
    return not problems, problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kelpie.dst.mutants",
        allow_abbrev=False,
        description="Plant each bug of kelpie.dst.mutant_list, run the kelpie dst storm on "
        "it, and check the simulator catches it; the clean code must pass the same seeds.",
        epilog="Any other option is a `kelpie dst` option (e.g. --clients 16 --steps 60 "
        "--faults all*2); without any, the storm is `--faults all --crashes`.",
    )
    parser.add_argument("--seeds", type=int, default=100, metavar="N", help="seed budget (100)")
    parser.add_argument("--start", type=int, default=0, metavar="S", help="first seed (0)")
    parser.add_argument("--seed", type=int, metavar="S", help="run only seed S (a replay)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--jobs", type=int, default=2, metavar="N", help="in parallel (2)")
    parser.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="wall seconds per run (600)"
    )
    parser.add_argument("--no-clean", action="store_true", help="skip the unmutated run")
    parser.add_argument(
        "--rev",
        metavar="REV",
        help="plant into kelpie/ as committed at git revision REV (default: the work tree)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--verbose", action="store_true", help="print each run's violations in full"
    )
    return parser


def _check_storm_args(storm: Sequence[str]) -> None:
    """Let ``kelpie dst``'s own parser reject a bad storm option now (exits 2)."""
    from kelpie.dst.cli import add_dst_arguments

    parser = argparse.ArgumentParser(prog="python -m kelpie.dst.mutants (storm options)")
    add_dst_arguments(parser)
    parser.parse_args(list(storm))


def _list(mutants: Sequence[Mutant], source: Path | None) -> int:
    status = 0
    for mutant in mutants:
        try:
            _, line = locate(mutant, source)
            place = f"{mutant.file}:{line}"
        except MutantError as exc:
            place, status = f"{mutant.file}: NOT FOUND EXACTLY ONCE", 2
            print(exc, file=sys.stderr)
        print(f"{mutant.name:34} {place:32} {mutant.description}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """The command; exit status 0: every mutant caught and the clean run passed."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [CHILD_FLAG]:
        return child(args[1:])
    options, storm = _parser().parse_known_args(args)
    try:
        mutants = find_mutants(options.only)
    except MutantError as exc:
        print(f"mutants: {exc}", file=sys.stderr)
        return 2
    if options.seeds < 1 or options.jobs < 1:
        print("mutants: --seeds and --jobs must be at least 1", file=sys.stderr)
        return 2
    storm = storm or list(DEFAULT_STORM)
    _check_storm_args(storm)
    with tempfile.TemporaryDirectory(prefix="kelpie-mutant-source-") as tmp:
        try:
            source = None if options.rev is None else export_revision(options.rev, Path(tmp))
        except MutantError as exc:
            print(f"mutants: {exc}", file=sys.stderr)
            return 2
        if options.list:
            return _list(mutants, source)
        return _run(options, mutants, storm, source)


def _run(
    options: argparse.Namespace, mutants: list[Mutant], storm: list[str], source: Path | None
) -> int:
    if options.seed is not None:
        seeds = [options.seed]
    else:
        seeds = list(range(options.start, options.start + options.seeds))
    print(
        f"{len(mutants)} mutants, seeds {seeds[0]}..{seeds[-1]}, storm: kelpie dst "
        f"{' '.join(storm)}, {options.jobs} at a time",
        file=sys.stderr,
    )

    def progress(result: MutantResult) -> None:
        verdict = "caught" if result.caught else "not caught"
        if result.name == "(clean)":
            verdict = "FAILED" if result.caught else "passed"
        print(
            f"  {result.name}: {verdict} after {result.seeds_run} seeds ({result.wall_time:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    started = time.perf_counter()
    try:
        results = run_mutants(
            mutants,
            seeds,
            storm,
            jobs=options.jobs,
            timeout=options.timeout,
            clean=not options.no_clean,
            on_done=progress,
            source=source,
        )
    except MutantError as exc:
        print(f"mutants: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - started
    ok, problems = _verdict(results)
    if options.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0 if ok else 1
    print(render_table(results, len(seeds)))
    imported = next((r.imported_from for r in results if r.imported_from), "")
    print(f"\ncode: {describe_source(options.rev)}")
    print(f"child processes imported kelpie from a copy, e.g. {imported}")
    print(f"storm: kelpie dst {' '.join(storm)}; {len(seeds)} seeds; wall time {wall:.1f} s")
    if options.verbose:
        for r in results:
            if r.violations:
                print(f"\n== {r.name}: seed {r.first_failing_seed}")
                print("\n".join(r.violations))
    if ok:
        caught = sum(1 for r in results if r.name != "(clean)")
        print(f"OK: all {caught} mutants caught" + ("; the clean run passed" if results else ""))
    else:
        print("FAILED:\n  " + "\n  ".join(problems))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
