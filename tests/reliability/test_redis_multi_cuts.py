"""Redis cut at every point of a ``WATCH``/``MULTI``/``EXEC`` commit (``?commit=multi``, ADR 0011).

The same ``TcpProxy`` and judge as ``test_redis_cuts.py`` (see
``kelpie.reliability.redis_cuts``), with the storage in multi mode: a cut
after a transaction's first read takes its ``WATCH`` with it, so the commit
must not land and must say so honestly; a cut before the block or inside it
writes nothing; a cut after ``EXEC`` ran is reported as an unknown outcome.
"""

from __future__ import annotations

import pytest

from kelpie.reliability.redis_cuts import cut_commits, ledger_through_cuts
from kelpie.testing.redis_server import RedisServer
from kelpie.testing.tcp_proxy import CutPoint

from .conftest import needs_redis

pytestmark = needs_redis


@pytest.mark.parametrize("point", list(CutPoint), ids=str)
async def test_multi_cut_commit_reports_what_redis_did(
    redis_server: RedisServer, point: CutPoint
) -> None:
    report = await cut_commits(redis_server.port, 6, seed=11, points=(point,), commit="multi")
    print(dict(report.outcomes))
    assert report.cuts[point.value] == 6  # every cut fired
    assert report.violations == []
    assert report.lost_acks == 0
    if point == CutPoint.AFTER_EXEC:
        assert report.outcomes == {f"{point.value}:unknown": 6}
    if point == CutPoint.AFTER_WATCH:
        # The WATCH died with its connection: never a plain success, and nothing landed.
        assert set(report.outcomes) <= {f"{point.value}:unavailable", f"{point.value}:unknown"}
    if point == CutPoint.BEFORE_MULTI:
        assert set(report.outcomes) <= {f"{point.value}:unavailable", f"{point.value}:unknown"}


def test_multi_ledger_through_random_cuts_keeps_every_invariant(redis_server: RedisServer) -> None:
    report, result = ledger_through_cuts(
        redis_server.port, seed=5, probability=0.25, clients=3, steps=25, commit="multi"
    )
    print(dict(report.cuts), result.acknowledged, result.invocations)
    assert report.violations == []
    assert report.lost_acks == 0
    assert result.acknowledged > 0
    assert sum(report.cuts.values()) >= 4  # the run really was cut


@pytest.mark.soak
async def test_multi_soak_a_thousand_cut_commits(redis_server: RedisServer) -> None:
    report = await cut_commits(redis_server.port, 1000, seed=1, commit="multi")
    print(dict(report.outcomes))
    assert sum(report.cuts.values()) == 1000
    assert report.violations == []
    assert report.lost_acks == 0
