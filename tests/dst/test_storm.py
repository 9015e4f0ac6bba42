"""The exploratory ledger storm: every fault, process crashes, 100 seeds, 0 violations."""

from __future__ import annotations

import os
import re

import pytest

from kelpie.dst.faults import FaultPlan
from kelpie.dst.harness import SimConfig
from kelpie.dst.storm import run_storm
from tests.dst.conftest import dst_seeds


def test_ledger_storm_with_every_fault_and_crashes_finds_no_violation() -> None:
    config = SimConfig(seed=0, faults=FaultPlan.everything(), crashes=True)
    storm = run_storm(dst_seeds(range(100)), config, "ledger")
    print()
    print(storm.summary())
    assert storm.seeds == len(dst_seeds(range(100)))
    assert storm.violations == 0, storm.summary()
    if "KELPIE_DST_SEED" not in os.environ:
        assert storm.never_fired == [], f"faults that never fired: {storm.never_fired}"
        assert storm.never_taken == [], f"paths never taken: {storm.never_taken}"
        assert storm.ok
        coverage = storm.coverage
        for path in ("conflict", "version_conflict", "lease_redirect", "zombie_rejected"):
            assert coverage.get(path, 0) > 0, path  # two live writers, and zombies, every storm
        assert coverage["unknown_not_applied"] > 0 and coverage["idempotency_eviction"] > 0
        assert storm.crashes > 0
        assert sum(r.gave_up for r in storm.results) > 0  # clients did give up sometimes
    assert storm.invocations > 0


def test_bank_storm_with_every_fault_finds_no_violation() -> None:
    config = SimConfig(seed=0, faults=FaultPlan.everything(), crashes=True)
    storm = run_storm(dst_seeds(range(30)), config, "bank")
    print()
    print(storm.summary())
    assert storm.violations == 0, storm.summary()


def test_a_failing_storm_prints_replay_commands() -> None:
    config = SimConfig(seed=0, faults=FaultPlan.parse("crash_during_commit:p=0.3"), runtime="naive")
    storm = run_storm(range(5), config, "bank")
    text = storm.summary()
    print(text)
    assert not storm.ok
    seed = storm.failing[0].seed
    assert f"kelpie dst --seed {seed} --workload bank" in text
    assert "--runtime naive" in text


@pytest.mark.soak
def test_soak_ten_thousand_seeds() -> None:
    """The documented soak: ``pytest -m soak tests/dst`` (or ``kelpie dst --seeds 10000``)."""
    config = SimConfig(seed=0, faults=FaultPlan.everything(), crashes=True)
    storm = run_storm(dst_seeds(range(10_000)), config, "ledger")
    print(storm.summary())
    assert storm.violations == 0, storm.summary()
    assert storm.never_fired == []


def test_a_storm_fails_on_a_required_path_never_taken() -> None:
    """Coverage is part of the verdict: a path a feature requires must be taken somewhere."""
    from kelpie.dst import WorkloadBase

    class NeverDeletes(WorkloadBase):
        name = "never-deletes"
        required_paths = ("delete",)

        async def step(self, sim: object, client: int, rng: object) -> None:
            return None

    config = SimConfig(seed=0, faults=FaultPlan.none(), runtimes=1, steps=1)
    small = run_storm(range(3), config, NeverDeletes)  # a replay of a few seeds never fails
    assert small.ok and small.never_taken == []
    storm = run_storm(range(20), config, NeverDeletes)
    print(storm.summary())
    assert not storm.ok
    assert storm.never_taken == ["chaos_deactivation", "delete", "idle_eviction"]
    assert re.search(  # the label column is as wide as the longest label
        r"\npaths never taken +chaos_deactivation, delete, idle_eviction\n", storm.summary()
    )
