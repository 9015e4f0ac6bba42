"""PostgreSQL under real faults: connections cut before/after COMMIT, the server SIGKILLed.

A ``PgProxy`` between kelpie and a real PostgreSQL cuts the connection just
before a commit reaches the server and just after it committed (its reply
dropped); each outcome is judged against what the table holds on a direct
connection (table in ``kelpie.reliability.postgres_faults``). The whole server
(postmaster and every backend) is SIGKILLed under concurrent load and
restarted on the same data: crash recovery must keep every acknowledged
commit and no commit may be torn.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kelpie.reliability import soak
from kelpie.reliability.postgres_faults import (
    counters_through_kills,
    cut_commits,
    ledger_through_cuts,
    ledger_through_kills,
)
from kelpie.testing.postgres_proxy import PgCut
from kelpie.testing.postgres_server import PostgresServer, missing_postgres

pytestmark = pytest.mark.skipif(missing_postgres() is not None, reason=str(missing_postgres()))


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    """A server of its own: these tests kill it."""
    with PostgresServer() as server:
        yield server


@pytest.mark.parametrize("point", list(PgCut), ids=str)
async def test_cut_commit_reports_what_postgres_did(pg: PostgresServer, point: PgCut) -> None:
    report = await cut_commits(pg, 8, seed=11, points=(point,), delete_every=4)
    print(dict(report.outcomes))
    assert report.cuts[point.value] == 8  # every cut fired
    assert report.violations == []
    assert report.lost_acks == 0
    if point == PgCut.AFTER_COMMIT:
        assert report.outcomes == {f"{point.value}:unknown": 8}


async def test_sigkilled_server_loses_no_acknowledged_commit(pg: PostgresServer) -> None:
    report = await counters_through_kills(pg, 3, seed=2)
    print(report.restarts, dict(report.outcomes))
    assert report.restarts == 3
    assert report.acknowledged > 20
    assert report.violations == []
    assert report.lost_acks == 0


def test_ledger_through_random_cuts_keeps_every_invariant(pg: PostgresServer) -> None:
    report, result = ledger_through_cuts(pg, seed=5, probability=0.25, steps=25)
    print(dict(report.cuts), result.acknowledged, result.invocations)
    assert report.violations == []
    assert report.lost_acks == 0
    assert result.acknowledged > 0
    assert sum(report.cuts.values()) >= 4  # the run really was cut


def test_ledger_through_sigkills_keeps_every_invariant(pg: PostgresServer) -> None:
    report = ledger_through_kills(pg, 2, seed=3)
    print(report)
    assert report.restarts == 2
    assert report.acknowledged > 0
    assert report.violations == []
    assert report.lost_acks == 0


_NO_OTHERS = ["--lmdb-kills", "0", "--redis-cuts", "0", "--ledger-runs", "0",
              "--redis-restarts", "0", "--fuzz", "0"]  # fmt: skip


def _rows(out: str, prefix: str) -> list[list[str]]:
    """The table rows whose scenario starts with ``prefix``: count, violations, lost, note..."""
    return [line[46:].split() for line in out.splitlines() if line.startswith(prefix)]


def test_soak_command_runs_postgres_cuts_and_kills(capsys: pytest.CaptureFixture[str]) -> None:
    code = soak.main([*_NO_OTHERS, "--postgres-cuts", "8", "--postgres-kills", "1"])
    out = capsys.readouterr().out
    print(out)
    assert code == 0
    assert "--postgres-cuts 8 --postgres-kills 1" in out
    cuts = _rows(out, "PostgreSQL connection cut ")
    assert len(cuts) == len(PgCut)
    assert sum(int(row[0]) for row in cuts) == 8
    assert all(row[1:3] == ["0", "0"] for row in cuts)
    assert _rows(out, "PostgreSQL server SIGKILL + restart")[0][:3] == ["1", "0", "0"]
    assert out.rstrip().endswith("OK")


def test_soak_command_without_postgres_work_starts_no_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse() -> None:
        raise AssertionError("the soak started PostgreSQL")

    monkeypatch.setattr(soak, "PostgresServer", refuse)
    assert soak.main([*_NO_OTHERS, "--postgres-cuts", "0", "--postgres-kills", "0"]) == 0
    out = capsys.readouterr().out
    assert "PostgreSQL" not in out and out.rstrip().endswith("OK")
    # Not installed: one row says so, and the soak does not fail for it.
    monkeypatch.setattr(soak, "missing_postgres", lambda: "no initdb here")
    assert soak.main([*_NO_OTHERS, "--postgres-cuts", "8", "--postgres-kills", "1"]) == 0
    out = capsys.readouterr().out
    assert "not run: no initdb here" in out and out.rstrip().endswith("OK")
    assert _rows(out, "PostgreSQL")[0][:3] == ["0", "0", "0"]


@pytest.mark.soak
async def test_soak_ten_sigkills_and_two_hundred_cuts(pg: PostgresServer) -> None:
    kills = await counters_through_kills(pg, 10, seed=9)
    cuts = await cut_commits(pg, 200, seed=1, delete_every=5)
    print(kills.acknowledged, dict(kills.outcomes), dict(cuts.outcomes))
    assert kills.restarts == 10
    assert kills.violations == [] and cuts.violations == []
    assert kills.lost_acks == 0 and cuts.lost_acks == 0
