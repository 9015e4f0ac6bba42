"""``kelpie demo --seed S``: two runs with one seed inject the same faults into the same
operations (and so acknowledge, refuse and retry the same), whatever the timing."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from kelpie.cli import main
from kelpie.demo import command
from kelpie.demo.faults import SeededFaults
from kelpie.dst.faults import FaultPlan


def _run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, seed: int
) -> tuple[Counter[tuple[str, str, str]], list[str]]:
    """One demo run: the faults that struck, per (actor, op, kind), and its figure lines."""
    made: list[SeededFaults] = []

    def recording(plan: FaultPlan, seed: str) -> SeededFaults:
        made.append(SeededFaults(plan, seed))
        return made[-1]

    monkeypatch.setattr(command, "SeededFaults", recording)
    argv = ["demo", "--storage", url, "--seed", str(seed), "--operations", "300"]
    code = main([*argv, "--fault-rate", "0.2", "--concurrency", "8"])
    out = capsys.readouterr().out
    print(out, file=sys.stderr)  # shown when the test fails; never read back as stdout
    assert code == 0
    (injector,) = made
    figures = [
        " ".join(line.split()[:2])  # the count, not the rate or the time
        if line.strip().startswith("invocations")
        else line.strip()
        for line in out.splitlines()
        if line.strip().startswith(("operations acknowledged", "invocations", "retries", "faults"))
    ]
    assert len(figures) == 4, figures
    return injector.struck, figures


def test_two_runs_with_one_seed_inject_the_same_faults(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # LMDB commits on worker threads: the operations in flight interleave differently each run.
    first, first_figures = _run(capsys, monkeypatch, f"lmdb://{tmp_path}/a", seed=7)
    second, second_figures = _run(capsys, monkeypatch, f"lmdb://{tmp_path}/b", seed=7)
    print("seed 7:", sum(first.values()), "faults on", len({k[0] for k in first}), "actors")
    assert sum(first.values()) > 20  # enough faults to mean something
    assert {kind for _, _, kind in first} >= {
        "crash_before_commit",
        "crash_after_commit",
        "spurious_conflict",
        "read_fail",
    }
    assert second == first
    assert second_figures == first_figures
    other, _ = _run(capsys, monkeypatch, f"lmdb://{tmp_path}/c", seed=8)
    assert other != first  # the faults do come from the seed
