"""``kelpie bench``: one row per backend x concurrency with sane figures, nothing left
behind in the store, and bad URLs or servers reported in one line (exit 2).

Durations are tiny (0.2 s); nothing here asserts a speed.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kelpie import ActorId, open_storage
from kelpie.bench import BenchOptions, Row, Sample, Target, bench_storage, summary_lines
from kelpie.bench.workload import read_batch_stats
from kelpie.cli import main
from kelpie.storage.memory import open_memory
from kelpie.storage.registry import register_scheme
from kelpie.testing.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
SECONDS = "0.2"
_names = itertools.count()


def _memory_url() -> str:
    return f"memory://test-bench-{next(_names)}"


def _bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["bench", "--seconds", SECONDS, *args])
    captured = capsys.readouterr()
    print(captured.out)  # shown when a test fails
    return code, captured.out, captured.err


def _table(out: str, backends: set[str]) -> list[list[str]]:
    """The table's rows (cells split on spaces) whose first cell names one of ``backends``."""
    return [
        line.split() for line in out.splitlines() if line.split()[:1] in [[b] for b in backends]
    ]


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def _namespace(out: str) -> str:
    match = re.search(r"actors (bench-[0-9a-f]+)/", out)
    assert match, out
    return match.group(1)


def _actor_ids(namespace: str, count: int) -> list[ActorId]:
    """Every actor the bench may have used: its own, and those of the group_commit=False side."""
    return [ActorId(namespace, f"{tag}{i}") for tag in ("a", "off-") for i in range(count)]


async def _leftover_keys(url: str, actors: list[ActorId]) -> dict[ActorId, list[bytes]]:
    async with open_storage(url) as storage:
        found = {actor: await storage.list_keys(actor) for actor in actors}
    return {actor: keys for actor, keys in found.items() if keys}


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _assert_sane_rows(rows: list[list[str]]) -> None:
    """inv/s and raw/s positive, p50 <= p99 (columns as in the table's header)."""
    for cells in rows:
        _, _, _, rate, p50, p99, raw_rate, raw_p99, ratio, _batch = cells[:10]
        assert _number(rate) > 0, cells
        assert 0 < _number(p50) <= _number(p99), cells
        assert _number(raw_rate) > 0, cells
        assert _number(raw_p99) > 0, cells
        assert _number(ratio) > 0, cells


# -- the measuring functions ------------------------------------------------------------


async def test_bench_storage_measures_every_concurrency_on_memory_and_lmdb(
    tmp_path: Path,
) -> None:
    options = BenchOptions(concurrencies=(1, 3), seconds=0.2, keys=(1, 4))
    targets = [Target("memory", _memory_url()), Target("lmdb", f"lmdb://{tmp_path}/store")]
    for target in targets:
        emitted: list[Row] = []
        rows = await bench_storage(target, options, namespace="bench-t1", emit=emitted.append)
        assert rows == emitted
        assert [(row.keys, row.concurrency) for row in rows] == [(1, 1), (1, 3), (4, 1), (4, 3)]
        for row in rows:
            assert row.backend == target.label
            assert row.kelpie.done > 0 and row.kelpie.rate > 0
            assert 0 < row.kelpie.p50_ms <= row.kelpie.p99_ms
            assert row.raw is not None and row.raw.rate > 0
            assert row.raw.p50_ms <= row.raw.p99_ms
            assert row.ratio is not None and row.ratio > 0
            assert row.off is None
        assert await _leftover_keys(target.url, _actor_ids("bench-t1", 3)) == {}
    # the raw baseline's scratch environment is gone; only the store remains
    assert _entries(tmp_path) == ["store"]


async def test_bench_storage_with_compare_off_measures_or_notes_why_not(tmp_path: Path) -> None:
    options = BenchOptions(concurrencies=(1, 2), seconds=0.2, compare_off=True)
    notes: list[str] = []
    target = Target("lmdb", f"lmdb://{tmp_path}/store")
    rows = await bench_storage(target, options, namespace="bench-t2", note=notes.append)
    assert len(rows) == 2
    unavailable = [n for n in notes if "group_commit=False unavailable" in n]
    for row in rows:
        if row.off is None:
            assert unavailable, notes
        else:
            assert row.off.rate > 0 and row.off.p50_ms <= row.off.p99_ms
    assert await _leftover_keys(target.url, _actor_ids("bench-t2", 2)) == {}
    assert _entries(tmp_path) == ["store"]


async def test_bench_storage_in_several_processes_splits_the_actors_and_cleans_up(
    tmp_path: Path,
) -> None:
    options = BenchOptions(concurrencies=(1, 5), seconds=0.4, slices=2, processes=2)
    notes: list[str] = []
    targets = [Target("memory", _memory_url()), Target("lmdb", f"lmdb://{tmp_path}/store")]
    for target in targets:
        rows = await bench_storage(target, options, namespace="bench-t3", note=notes.append)
        assert [row.concurrency for row in rows] == [1, 5]
        for row in rows:
            assert row.kelpie.done > 0 and row.kelpie.rate > 0
            assert len(row.kelpie.latencies) == row.kelpie.done  # every process's latencies
            assert 0 < row.kelpie.p50_ms <= row.kelpie.p99_ms
            assert row.raw is not None and row.raw.rate > 0
        if target.label == "lmdb":
            assert rows[1].mean_batch is not None and rows[1].mean_batch >= 1.0
    assert any("memory: a memory store is one process's own" in n for n in notes), notes
    # process i hosted actors i, i+2, ... as "a{i}-{n}"; every key of every one is gone
    spread = [ActorId("bench-t3", f"a{i}-{n}") for i in range(2) for n in range(5)]
    lmdb = f"lmdb://{tmp_path}/store"
    assert await _leftover_keys(lmdb, spread + _actor_ids("bench-t3", 5)) == {}
    assert _entries(tmp_path) == ["store"]


def test_cli_processes_is_checked_and_printed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _bench(capsys, "--processes", "0")
    assert code == 2 and "--processes must be between 1 and 64" in err
    lmdb = f"lmdb://{tmp_path}/store"
    code, out, err = _bench(capsys, "--storage", lmdb, "--concurrency", "2", "--processes", "2")
    assert code == 0, err
    assert "kelpie's side in 2 runtime processes" in out
    _assert_sane_rows(_table(out, {"lmdb"}))


def test_percentiles_are_nearest_rank() -> None:
    sample = Sample(done=100, elapsed=2.0, latencies=[i / 1000 for i in range(100, 0, -1)])
    assert sample.rate == 50.0
    assert sample.p50_ms == pytest.approx(50.0)
    assert sample.p99_ms == pytest.approx(99.0)
    assert sample.percentile_ms(1.0) == pytest.approx(100.0)
    assert Sample().p99_ms == 0.0


def _row(backend: str, concurrency: int, rate: float, keys: int = 1) -> Row:
    return Row(backend, keys, concurrency, Sample(done=int(rate), elapsed=1.0, latencies=[0.001]))


def test_summary_reports_scaling_and_the_cost_of_more_keys() -> None:
    rows = [
        _row("redis", 1, 1000),
        _row("redis", 64, 8000),
        _row("redis", 1, 500, keys=100),
        _row("redis", 64, 2000, keys=100),
    ]
    lines = summary_lines(rows)
    assert "redis: 64 actors / 1 actor: 8.00x (1 key)" in lines
    assert "redis: 64 actors / 1 actor: 4.00x (100 keys)" in lines
    keys_line = next(line for line in lines if "time per invocation" in line)
    assert "100 keys / 1 key: 2.00x at 1, 4.00x at 64" in keys_line
    assert keys_line.endswith("one invocation at a time: <= 3x at 1: met")


def test_summary_says_when_the_redis_keys_target_is_missed() -> None:
    rows = [_row("redis", 1, 1000), _row("redis", 1, 250, keys=100)]
    keys_line = next(line for line in summary_lines(rows) if "time per invocation" in line)
    assert "100 keys / 1 key: 4.00x at 1" in keys_line
    assert keys_line.endswith("<= 3x at 1: missed")


def test_summary_reports_group_commit_speed_up_and_p99_change() -> None:
    on = Row("lmdb", 1, 1, Sample(100, 1.0, [0.011]), off=Sample(100, 1.0, [0.010]))
    on64 = Row("lmdb", 1, 64, Sample(900, 1.0, [0.02]), off=Sample(100, 1.0, [0.5]))
    lines = summary_lines([on, on64])
    assert "lmdb: group commit on / off, inv/s: 1.00x at 1, 9.00x at 64" in lines
    assert "lmdb: p99 with group commit vs without at 1 actor: +10%" in lines


def test_batch_stats_are_read_from_an_attribute_or_a_method() -> None:
    class Attribute:
        batch_stats = (4, 10)

    class Method:
        def batch_stats(self) -> tuple[int, int]:
            return (2, 6)

    assert read_batch_stats(Attribute()) == (4, 10)
    assert read_batch_stats(Method()) == (2, 6)
    assert read_batch_stats(object()) is None


# -- the command ----------------------------------------------------------------------


def test_cli_prints_one_row_per_backend_and_concurrency_and_cleans_up(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    memory, lmdb = _memory_url(), f"lmdb://{tmp_path}/store"
    code, out, err = _bench(capsys, "--storage", memory, "--storage", lmdb, "--concurrency", "1,4")
    assert code == 0, err
    rows = _table(out, {"memory", "lmdb"})
    assert [(cells[0], cells[2]) for cells in rows] == [
        ("memory", "1"),
        ("memory", "4"),
        ("lmdb", "1"),
        ("lmdb", "4"),
    ]
    _assert_sane_rows(rows)
    assert "memory: 4 actors / 1 actor:" in out
    assert "lmdb: 4 actors / 1 actor:" in out
    actors = _actor_ids(_namespace(out), 4)
    for url in (memory, lmdb):
        assert asyncio.run(_leftover_keys(url, actors)) == {}
    assert _entries(tmp_path) == ["store"]


def test_cli_without_storage_measures_memory_lmdb_and_a_private_redis(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _bench(capsys, "--concurrency", "1,2")
    assert code == 0, err
    rows = _table(out, {"memory", "lmdb", "redis", "redis-multi"})
    assert [(cells[0], cells[2]) for cells in rows] == [
        (backend, n) for backend in ("memory", "lmdb", "redis", "redis-multi") for n in ("1", "2")
    ]
    _assert_sane_rows(rows)


def test_cli_on_redis_deletes_every_key_it_wrote(
    capsys: pytest.CaptureFixture[str], redis_server: RedisServer
) -> None:
    import redis

    url = f"{redis_server.url}?prefix=benchtest"
    code, out, err = _bench(capsys, "--storage", url, "--concurrency", "1,3", "--keys", "1,5")
    assert code == 0, err
    rows = _table(out, {"redis"})
    assert [(cells[1], cells[2]) for cells in rows] == [
        ("1", "1"),
        ("1", "3"),
        ("5", "1"),
        ("5", "3"),
    ]
    _assert_sane_rows(rows)
    assert "redis: time per invocation, 5 keys / 1 key:" in out
    namespace = _namespace(out)
    assert asyncio.run(_leftover_keys(url, _actor_ids(namespace, 3))) == {}
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.keys(f"{namespace}-raw:*") == []  # the raw baseline's own keys
        # The run wrote under a private prefix below "benchtest" and removed it,
        # store-wide keys (format marker, deletes counter) included.
        assert client.keys("benchtest:*") == []
        code, out, err = _bench(
            capsys, "--storage", url, "--workload", "transfers", "--concurrency", "2"
        )
        assert code == 0, err
        assert client.keys("benchtest:*") == []  # accounts and messaging index shards too
    finally:
        client.close()


def test_cli_keys_comparison_prints_the_cost_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _bench(
        capsys, "--storage", _memory_url(), "--concurrency", "1", "--keys", "1,10"
    )
    assert code == 0, err
    rows = _table(out, {"memory"})
    assert [cells[1] for cells in rows] == ["1", "10"]
    line = next(line for line in out.splitlines() if "time per invocation" in line)
    assert line.startswith("memory: time per invocation, 10 keys / 1 key: ")


def test_cli_compare_off_adds_the_off_columns(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _bench(
        capsys, "--storage", _memory_url(), "--concurrency", "1,2", "--compare-off"
    )
    assert code == 0, err
    assert "off inv/s" in out
    rows = _table(out, {"memory"})
    assert len(rows) == 2
    if "group_commit=False unavailable" not in out:
        for cells in rows:
            assert _number(cells[10]) > 0, cells
        assert "memory: p99 with group commit vs without at 1 actor:" in out


def test_a_third_party_scheme_has_no_raw_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    register_scheme("benchthirdparty", lambda url, **options: open_memory("memory://", **options))
    code, out, err = _bench(capsys, "--storage", "benchthirdparty://x", "--concurrency", "1")
    assert code == 0, err
    (cells,) = _table(out, {"benchthirdparty"})
    assert cells[6:9] == ["n/a", "n/a", "n/a"]
    assert _number(cells[3]) > 0


@pytest.mark.parametrize(
    "url", ["bogus://x", "no-scheme-here", "lmdb://somehost/dir", "memory://?frobnicate=1"]
)
def test_a_bad_url_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = _bench(capsys, "--storage", url)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kelpie bench: ")
    assert "Traceback" not in err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_server_exits_2_without_showing_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"redis://bench:hunter2secret@127.0.0.1:{_closed_port()}/0"
    code, out, err = _bench(capsys, "--storage", url)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "StorageUnavailableError" in err
    assert "hunter2secret" not in err + out


@pytest.mark.parametrize(
    "args", [["--concurrency", "0"], ["--keys", "x"], ["--seconds", "-1"], ["--slices", "0"]]
)
def test_a_bad_option_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code = main(["bench", "--storage", "memory://", *args])
    captured = capsys.readouterr()
    assert code == 2
    assert len(captured.err.splitlines()) == 1, captured.err
    assert captured.out == ""


def test_the_benchmark_script_runs_the_same_bench() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--storage", "memory://",
         "--concurrency", "1", "--seconds", SECONDS],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(_table(result.stdout, {"memory"})) == 1


def test_the_transfer_summary_gives_the_spread_of_the_rounds_ratios() -> None:
    from kelpie.bench.transfers import TransferRow, transfer_summary_lines

    plain = Sample(done=300, elapsed=3.0, rates=[100.0, 50.0, 150.0])
    transfers = Sample(done=120, elapsed=3.0, rates=[40.0, 30.0, 45.0])
    row = TransferRow("memory", 64, plain, transfers)
    assert row.ratio == pytest.approx(0.4)  # pooled: 40/s over 100/s
    assert row.slice_ratios == pytest.approx([0.4, 0.6, 0.3])
    (line,) = transfer_summary_lines([row])
    assert line == (
        "memory: transfers/s / inv/s: 0.40x at 64 "
        "(issue 16 target >= 0.4x at 64: met; its 3 slices 0.30-0.60)"
    )
    one = TransferRow("memory", 1, Sample(10, 1.0, rates=[10.0]), Sample(3, 1.0, rates=[3.0]))
    assert transfer_summary_lines([one]) == [
        "memory: transfers/s / inv/s: 0.30x at 1 (issue 16 target >= 0.4x at 1: missed)"
    ]
