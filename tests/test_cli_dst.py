"""``kelpie dst`` and ``run_storm``: what a failing seed prints replays it, for a user's own
workload too, and every count of the summary is written one way (thousands separators).
"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any

import pytest

from kelpie.dst import FaultPlan, SimConfig, Simulation, WorkloadBase, replay_commands, run_storm
from kelpie.dst.cli import add_dst_arguments, run_dst_command
from kelpie.dst.workloads import LedgerWorkload


class AlwaysBroken(WorkloadBase):
    """A user's workload (defined at module level, so importable) whose check always fails."""

    name = "always-broken"

    async def check(self, sim: Simulation) -> None:
        sim.violation("the check of a user's workload failed")


async def extra_invariant(sim: Simulation) -> None:
    """An end-of-run invariant passed in ``SimConfig(invariants=...)``; never fails."""


def _replay_python(lines: list[str]) -> Any:
    """Run the printed Python replay; return what its ``run_seed(...)`` call returned."""
    *setup, call = lines
    assert call.startswith("run_seed("), lines
    namespace: dict[str, Any] = {}
    exec("\n".join([*setup, f"result = {call}"]), namespace)
    return namespace["result"]


def test_a_failing_seed_of_a_users_workload_prints_a_python_call_that_replays_it() -> None:
    config = SimConfig(
        seed=0,
        faults=FaultPlan.parse("read_fail:p=0.05,crash_after_commit:p=0.1"),
        crashes=True,
        attempts=4,
        invariants=(extra_invariant,),
    )
    storm = run_storm(range(3), config, AlwaysBroken)
    text = storm.summary()
    print(text)
    assert "pytest" not in text and "KELPIE_DST_SEED" not in text
    for result in storm.failing:
        lines = replay_commands(result.seed, config, AlwaysBroken)
        assert lines == [
            "from kelpie.dst import FaultPlan, SimConfig, run_seed",
            "from tests.test_cli_dst import AlwaysBroken, extra_invariant",
            f"run_seed(AlwaysBroken, SimConfig(seed={result.seed}, faults=FaultPlan.parse("
            "'read_fail:p=0.05,crash_after_commit:p=0.1'), crashes=True, attempts=4, "
            "invariants=(extra_invariant,)))",
        ]
        assert "  replay (Python):\n" + "\n".join(f"    {line}" for line in lines) in text
        replayed = _replay_python(lines)
        assert replayed.digest == result.digest, f"seed {result.seed}"
        assert replayed.violations == result.violations


def test_a_workload_defined_in_a_function_is_named_with_a_note_where_it_lives() -> None:
    class Local(AlwaysBroken):
        pass

    lines = replay_commands(5, SimConfig(seed=0, runtimes=1), Local)
    print("\n".join(lines))
    assert lines[0] == "from kelpie.dst import SimConfig, run_seed"
    assert lines[1] == (
        "# Local is defined inside test_a_workload_defined_in_a_function_is_named_with_a_note_"
        "where_it_lives() in tests.test_cli_dst: run this where it is in scope"
    )
    assert lines[2] == "run_seed(Local, SimConfig(seed=5, runtimes=1))"


def test_a_builtin_workload_replays_with_the_kelpie_dst_command() -> None:
    config = SimConfig(seed=0, faults=FaultPlan.none(), runtimes=2, storage_url="redis://h/0?x=1")
    for workload in ("ledger", LedgerWorkload):  # by name, or its factory
        (line,) = replay_commands(9, config, workload)
        assert shlex.split(line)[:6] == ["kelpie", "dst", "--seed", "9", "--workload", "ledger"]
        assert "--runtimes 2" in line and "--faults none" in line
        assert "--storage 'redis://h/0?x=1'" in line  # shell-quoted
    # A field the command has no option for: the Python call, which can say it.
    lines = replay_commands(9, SimConfig(seed=0, attempts=2), "ledger")
    assert lines[-2:] == [
        "from kelpie.dst.workloads.ledger import LedgerWorkload",
        "run_seed(LedgerWorkload, SimConfig(seed=9, attempts=2))",
    ]
    # kelpie's own tests can still ask for the pytest form beside it.
    assert replay_commands(9, config, "ledger", pytest_target="tests/dst")[-1] == (
        "KELPIE_DST_SEED=9 pytest tests/dst"
    )


def test_the_printed_command_replays_a_builtin_seed_to_the_same_digest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = SimConfig(seed=0, faults=FaultPlan.parse("crash_during_commit:p=0.3"), runtime="naive")
    storm = run_storm(range(6), config, "bank")
    assert storm.failing, storm.summary()
    result = storm.failing[0]
    (line,) = replay_commands(result.seed, config, "bank")
    argv = shlex.split(line)
    assert argv[:2] == ["kelpie", "dst"]
    parser = argparse.ArgumentParser()
    add_dst_arguments(parser)
    assert run_dst_command(parser.parse_args([*argv[2:], "--quiet"])) == 1
    out = capsys.readouterr().out
    print(out)
    assert f"digest  {result.digest}" in out


def _table_values(summary: str) -> dict[str, str]:
    table = summary.split("\n\n")[0]
    return {
        name: value
        for name, value in (re.split(r"\s{2,}", line, maxsplit=1) for line in table.splitlines())
    }


def test_every_count_in_the_summary_has_thousands_separators(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    add_dst_arguments(parser)
    argv = ["--seeds", "12", "--steps", "30", "--crashes", "--workload", "ledger", "--quiet"]
    assert run_dst_command(parser.parse_args(argv)) == 0
    out = capsys.readouterr().out
    print(out)
    values = _table_values(out)
    assert int(values["invocations"].replace(",", "")) >= 1000  # the case that showed "6908"
    numbers = {name: v for name, v in values.items() if re.fullmatch(r"[\d,]+", v)}
    assert {"seeds", "invocations", "invocations/s", "acknowledged", "violations"} <= set(numbers)
    for name, value in numbers.items():
        assert re.fullmatch(r"\d{1,3}(,\d{3})*", value), f"{name}: {value}"
    assert any("," in v for v in numbers.values())
