"""The simulator exercises group commit: batches of commits, and crashes while one is written."""

from __future__ import annotations

from kelpie.dst import FaultPlan, SimConfig, run_seed
from kelpie.dst.workloads import WORKLOADS
from tests.dst.conftest import dst_seeds


def _config(seed: int) -> SimConfig:
    # 16 clients keep several commits in flight, so batches form. Histories this
    # concurrent are slow to search: the storage invariants are what these tests check.
    return SimConfig(
        seed=seed, faults=FaultPlan.everything(), crashes=True, clients=16, history=False
    )


def test_crashes_strike_batches_mid_write_and_every_invariant_holds() -> None:
    seeds = dst_seeds(range(24))
    batch_crashes = 0
    for seed in seeds:
        result = run_seed(WORKLOADS["ledger"], _config(seed))
        print(f"seed {seed}: crashes mid-batch {result.batch_crashes}, digest {result.digest}")
        assert result.ok, f"seed {seed}: {result.violations[:3]}"
        batch_crashes += result.batch_crashes
    if len(seeds) > 1:
        assert batch_crashes > 0, "no crash hit a batch: the scenario is not exercised"


def test_a_seed_with_a_crash_mid_batch_replays_exactly() -> None:
    seed = next(s for s in range(100) if run_seed(WORKLOADS["ledger"], _config(s)).batch_crashes)
    print(f"seed {seed}")
    first = run_seed(WORKLOADS["ledger"], _config(seed))
    second = run_seed(WORKLOADS["ledger"], _config(seed))
    assert first.batch_crashes > 0
    assert first.digest == second.digest
    assert first.ok and second.ok


def test_the_simulation_runs_with_group_commit_off_too() -> None:
    config = SimConfig(seed=7, faults=FaultPlan.everything(), crashes=True, group_commit=False)
    result = run_seed(WORKLOADS["ledger"], config)
    print(f"seed 7 (group commit off): {result.invocations} invocations")
    assert result.ok and result.batch_crashes == 0 and result.acknowledged > 0
