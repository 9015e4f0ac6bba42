"""The tools on postgresql://: ``kelpie bench`` (raw asyncpg baseline, issue 18's targets),
``kelpie conformance`` and the simulator over a real server (``kelpie dst --storage``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import pytest

from kelpie.cli import main
from kelpie.dst.faults import FaultPlan
from kelpie.dst.harness import SimConfig
from kelpie.dst.storm import run_storm
from kelpie.testing.postgres_server import PostgresServer, missing_postgres

_KELPIE = "import sys; from kelpie.cli import main; sys.exit(main(sys.argv[1:]))"

pytestmark = pytest.mark.skipif(missing_postgres() is not None, reason=str(missing_postgres()))


async def _tables(server: PostgresServer) -> list[str]:
    conn = await asyncpg.connect(**server.connect_kwargs)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return sorted(row["tablename"] for row in rows)


async def test_bench_measures_postgres_beside_raw_asyncpg_and_prints_the_targets(
    capsys: pytest.CaptureFixture[str], postgres_server: PostgresServer
) -> None:
    url = postgres_server.url(table="bench_tool", sslmode="disable")
    argv = ["bench", "--seconds", "0.3", "--concurrency", "1,64", "--storage", url]
    code = await asyncio.to_thread(main, argv)  # bench runs its own event loop
    out = capsys.readouterr().out
    print(out)
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.startswith("postgresql ")]
    assert [(cells[2], cells[8] != "n/a") for cells in rows] == [("1", True), ("64", True)]
    assert "postgresql: issue 18 targets, kelpie / raw: 64 actors " in out
    assert postgres_server.password not in out
    assert [t for t in await _tables(postgres_server) if "raw" in t] == []  # raw table dropped


def test_kelpie_conformance_passes_on_postgres(postgres_server: PostgresServer) -> None:
    url = postgres_server.url(table="conformance_tool")
    done = subprocess.run(
        [sys.executable, "-c", _KELPIE, "conformance", url, "-q", "-x"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 0
    assert "kelpie conformance: PASS postgresql://kelpie:***@" in done.stdout + done.stderr
    assert postgres_server.password not in done.stdout + done.stderr


def test_ledger_over_postgres_with_faults_and_crashes_in_real_time(
    postgres_server: PostgresServer,
) -> None:
    faults = FaultPlan.parse("all*2,latency:p=0.1:delay=0-0.002,outage:p=0.005:duration=0.02")
    config = SimConfig(
        seed=0,
        faults=faults,
        crashes=True,
        clients=3,
        steps=15,
        storage_url=postgres_server.url(table="dst_ledger"),
    )
    storm = run_storm(range(3), config, "ledger")
    print(storm.summary())
    assert storm.violations == 0, storm.summary()
    assert sum(storm.faults.values()) > 0
    assert not any(r.deterministic for r in storm.results)
