"""Redis connections cut at every point of a commit: honest outcomes, ledger invariants hold.

A ``TcpProxy`` between kelpie and a real ``redis-server`` cuts the connection
after a transaction's first read, before the commit (kelpie's check-and-set
script call), inside it (only part of the call reaches Redis) and after it ran
but before its reply. Each outcome is
judged against what Redis holds on a direct connection (see
``kelpie.reliability.redis_cuts`` for the table).
"""

from __future__ import annotations

import pytest

from kelpie.reliability.redis_cuts import cut_commits, ledger_through_cuts
from kelpie.testing.redis_server import RedisServer
from kelpie.testing.tcp_proxy import CutPoint

from .conftest import needs_redis

pytestmark = needs_redis


@pytest.mark.parametrize("point", list(CutPoint), ids=str)
async def test_cut_commit_reports_what_redis_did(
    redis_server: RedisServer, point: CutPoint
) -> None:
    report = await cut_commits(redis_server.port, 6, seed=11, points=(point,))
    print(dict(report.outcomes))
    assert report.cuts[point.value] == 6  # every cut fired
    assert report.violations == []
    assert report.lost_acks == 0
    if point == CutPoint.AFTER_EXEC:
        assert report.outcomes == {f"{point.value}:unknown": 6}
    if point == CutPoint.AFTER_WATCH:
        # No WATCH to lose: the commit reconnects and its version check still holds.
        assert report.outcomes[f"{point.value}:ok"] >= 1
        assert set(report.outcomes) <= {f"{point.value}:ok", f"{point.value}:unknown"}


def test_ledger_through_random_cuts_keeps_every_invariant(redis_server: RedisServer) -> None:
    report, result = ledger_through_cuts(
        redis_server.port, seed=5, probability=0.25, clients=3, steps=25
    )
    print(dict(report.cuts), result.acknowledged, result.invocations)
    assert report.violations == []
    assert report.lost_acks == 0
    assert result.acknowledged > 0
    assert sum(report.cuts.values()) >= 4  # the run really was cut


@pytest.mark.soak
async def test_soak_a_thousand_cut_commits(redis_server: RedisServer) -> None:
    report = await cut_commits(redis_server.port, 1000, seed=1)
    print(dict(report.outcomes))
    assert sum(report.cuts.values()) == 1000
    assert report.violations == []


@pytest.mark.soak
def test_soak_ledger_through_cuts_many_seeds(redis_server: RedisServer) -> None:
    for seed in range(20):
        report, _ = ledger_through_cuts(redis_server.port, seed=seed)
        assert report.violations == [], seed
