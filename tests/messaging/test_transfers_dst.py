"""The transfers workload under every fault and process crashes: money conserved, once."""

from __future__ import annotations

import pytest

from kelpie.dst.config import SimConfig
from kelpie.dst.fault_plan import FaultPlan
from kelpie.dst.harness import run_seed
from kelpie.dst.workloads import WORKLOADS
from kelpie.dst.workloads.transfers import TransfersWorkload


@pytest.mark.parametrize("seed", range(12))
def test_transfers_conserve_money_and_apply_each_message_once(seed: int) -> None:
    print(f"seed {seed}")
    config = SimConfig(seed=seed, faults=FaultPlan.everything(), crashes=True)
    result = run_seed(TransfersWorkload, config)
    assert result.violations == [], result.violations
    assert result.coverage.get("transfers_received", 0) > 0
    assert result.coverage.get("transfers_received") == result.coverage.get("transfers_sent")


def test_the_workload_is_registered_for_kelpie_dst() -> None:
    assert WORKLOADS["transfers"] is TransfersWorkload


def test_a_seed_replays_identically() -> None:
    config = SimConfig(seed=3, faults=FaultPlan.everything(), crashes=True)
    assert run_seed(TransfersWorkload, config).digest == run_seed(TransfersWorkload, config).digest
