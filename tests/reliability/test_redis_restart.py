"""redis-server (AOF, appendfsync always) SIGKILLed and restarted: nothing acknowledged is lost."""

from __future__ import annotations

import pytest

from kelpie.reliability.redis_restarts import ledger_through_restarts, outage
from kelpie.testing.redis_server import RedisServer

from .conftest import needs_redis

pytestmark = needs_redis


async def test_invocations_fail_with_unavailable_while_redis_is_down_then_recover(
    aof_server: RedisServer,
) -> None:
    report = await outage(aof_server)
    print(f"slowest failure while down: {report.slowest_failure:.3f} s")
    assert report.violations == []
    assert report.acknowledged == 3  # the same runtime carried on by itself


def test_acknowledged_ledger_commits_survive_a_sigkill_of_redis(aof_server: RedisServer) -> None:
    report = ledger_through_restarts(aof_server, 1, seed=3)
    print(report)
    assert report.restarts == 1
    assert report.acknowledged > 0
    assert report.violations == []
    assert report.lost_acks == 0


@pytest.mark.soak
def test_soak_twenty_redis_restarts(aof_server: RedisServer) -> None:
    report = ledger_through_restarts(aof_server, 20, seed=7)
    assert report.restarts == 20
    assert report.violations == []
