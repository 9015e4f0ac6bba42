"""The simulation harness over a real SQLite file, in real time: faults fire, invariants hold."""

from __future__ import annotations

from pathlib import Path

from kelpie.dst.faults import FaultPlan
from kelpie.dst.harness import SimConfig
from kelpie.dst.storm import run_storm


def test_ledger_over_sqlite_with_faults_in_real_time(tmp_path: Path) -> None:
    faults = FaultPlan.parse("all*2,latency:p=0.1:delay=0-0.002,outage:p=0.005:duration=0.02")
    config = SimConfig(
        seed=0,
        faults=faults,
        crashes=True,
        clients=3,
        steps=15,
        storage_url=f"sqlite://{tmp_path / 'dst.db'}",
    )
    storm = run_storm(range(3), config, "ledger")
    print(storm.summary())
    assert storm.violations == 0, storm.summary()
    assert sum(storm.faults.values()) > 0
    assert not any(r.deterministic for r in storm.results)
