"""``kelpie dst``: summary table, replay commands, exit status."""

from __future__ import annotations

import argparse
import re

import pytest

from kelpie.dst.cli import add_dst_arguments, run_dst_command


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kelpie dst")
    add_dst_arguments(parser)
    return parser.parse_args(list(argv))


def test_a_clean_storm_exits_zero_and_prints_the_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run_dst_command(parse("--seeds", "5", "--crashes", "--steps", "10"))
    out, err = capsys.readouterr()
    print(out)
    assert code == 0
    assert "invocations/s" in out
    assert "fault crash_after_commit" in out
    assert re.search(r"^violations +0$", out, re.MULTILINE)
    assert "5/5 seeds" in err  # the progress bar


def test_a_violation_exits_non_zero_with_replay_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--seeds", "3", "--workload", "bank", "--runtime", "naive", "--quiet"]
    code = run_dst_command(parse(*argv, "--faults", "crash_during_commit:p=0.3"))
    out, _ = capsys.readouterr()
    print(out)
    assert code == 1
    assert "kelpie dst --seed " in out
    assert "pytest" not in out  # kelpie's own tests/dst is no replay for a user


def test_one_seed_replays_to_the_same_digest(capsys: pytest.CaptureFixture[str]) -> None:
    digests = []
    for _ in range(2):
        assert run_dst_command(parse("--seed", "42", "--crashes", "--quiet")) == 0
        out, _ = capsys.readouterr()
        digests.append(next(line for line in out.splitlines() if line.startswith("digest")))
    print(digests[0])
    assert digests[0] == digests[1]


def test_bad_fault_spec_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_dst_command(parse("--faults", "meteor_strike", "--quiet")) == 2
    assert "unknown fault 'meteor_strike'" in capsys.readouterr().err


def test_pinned_topology_flags_reach_the_run_and_the_replay_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--seed", "3", "--runtimes", "2", "--leases", "--lease-seconds", "0.3"]
    argv += ["--idle-timeout", "0", "--no-chaos", "--idempotency-window", "5", "--quiet"]
    assert run_dst_command(parse(*argv)) == 0
    out, _ = capsys.readouterr()
    print(out)
    assert re.search(r"^topology +2 runtimes, leases 0.3 s, no idle eviction, pauses$", out, re.M)

    from kelpie.dst.harness import SimConfig
    from kelpie.dst.storm import replay_commands

    config = SimConfig(seed=3, runtimes=2, leases=False, chaos=False, idempotency_window=5)
    cli = replay_commands(3, config, "ledger")[0]
    assert "--runtimes 2 --no-leases" in cli and "--no-chaos" in cli
    assert "--idempotency-window 5" in cli
