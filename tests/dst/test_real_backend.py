"""The same harness over a real backend (Redis), in real time: faults fire, invariants hold."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kelpie.dst.faults import FaultPlan
from kelpie.dst.harness import SimConfig
from kelpie.dst.storm import run_storm

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    from kelpie.testing.redis_server import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server.url
    finally:
        server.kill()


def test_ledger_over_redis_with_faults_in_real_time(redis_url: str) -> None:
    faults = FaultPlan.parse("all*2,latency:p=0.1:delay=0-0.002,outage:p=0.005:duration=0.02")
    config = SimConfig(
        seed=0, faults=faults, crashes=True, clients=3, steps=15, storage_url=redis_url
    )
    storm = run_storm(range(3), config, "ledger")
    print(storm.summary())
    assert storm.violations == 0, storm.summary()
    assert sum(storm.faults.values()) > 0
    assert not any(r.deterministic for r in storm.results)
