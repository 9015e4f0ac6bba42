"""``kelpie bench`` progress on stderr, its ``--seconds`` message, and ``kelpie --version``.

Durations are tiny (0.2 s per figure and side); nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from kelpie.bench.command import add_arguments, parse_options
from kelpie.bench.progress import BenchProgress
from kelpie.cli import main

_names = itertools.count()


def _memory_url() -> str:
    return f"memory://test-cli-bench-{next(_names)}"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["bench", "--seconds", "0.2", *args])
    captured = capsys.readouterr()
    print(captured.out)
    print(captured.err)
    return code, captured.out, captured.err


def test_bench_reports_each_figure_on_stderr_while_the_table_stays_on_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(
        capsys, "--storage", _memory_url(), "--concurrency", "1,2", "--keys", "1,3"
    )
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0].startswith(
        "kelpie bench: 0/4 figures, measuring memory, 1 key, 1 actor, about "
    )
    assert all(line.startswith("kelpie bench: ") for line in lines), lines
    done = [line.split(" (", 1)[1].split(" done)")[0] for line in lines[1:]]
    assert done == [
        "memory, 1 key, 1 actor",
        "memory, 1 key, 2 actors",
        "memory, 3 keys, 1 actor",
        "memory, 3 keys, 2 actors",
    ]
    assert [line.split(": ", 1)[1].split(" ")[0] for line in lines[1:]] == [
        "1/4",
        "2/4",
        "3/4",
        "4/4",
    ]
    assert "left" in lines[1] and "left" not in lines[-1]
    assert "figures" not in out  # progress never reaches the table
    assert sum(1 for line in out.splitlines() if line.startswith("memory ")) == 4


def test_bench_quiet_prints_no_progress(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "--storage", _memory_url(), "--concurrency", "1", "--quiet")
    assert code == 0, err
    assert err == ""
    assert sum(1 for line in out.splitlines() if line.startswith("memory ")) == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_progress_is_a_bar_redrawn_in_place_and_cleared() -> None:
    stream = _Terminal()
    progress = BenchProgress(2, 10.0, stream=stream)
    progress.begin("lmdb", 1, 8)
    progress.tick()
    drawn = stream.getvalue()
    assert drawn.startswith("\r[") and "\n" not in drawn
    assert "0/2 figures, measuring lmdb, 1 key, 8 actors, about 20 s left" in drawn
    progress.clear()
    assert stream.getvalue().endswith("\r\x1b[K")  # a table row printed now starts clean
    progress.end()
    assert stream.getvalue().endswith("] 1/2 figures, about 10 s left\x1b[K")
    progress.begin("lmdb", 1, 64)
    progress.end()
    assert stream.getvalue().endswith("[" + "#" * 30 + "] 2/2 figures\x1b[K")


def _options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("seconds", ["0", "-1", "3600.5", "nan"])
def test_seconds_out_of_range_says_exactly_what_it_accepts(
    capsys: pytest.CaptureFixture[str], seconds: str
) -> None:
    code = main(["bench", "--storage", "memory://", "--seconds", seconds])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"kelpie bench: --seconds must be more than 0 and at most 3600, got {seconds}\n"


@pytest.mark.parametrize("seconds", ["0.001", "3600"])
def test_seconds_accepts_what_the_message_says(seconds: str) -> None:
    assert parse_options(_options("--seconds", seconds)).seconds == float(seconds)


def test_kelpie_version_prints_the_installed_package_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"kelpie {importlib.metadata.version('kelpie')}\n"


def test_the_installed_command_prints_its_version() -> None:
    command = Path(sys.executable).parent / "kelpie"  # the console script beside python
    assert command.exists(), command
    result = subprocess.run(
        [str(command), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"kelpie {importlib.metadata.version('kelpie')}"


# -- --workload transfers (issue 16) ------------------------------------------------------


def _kelpie(*args: str) -> subprocess.CompletedProcess[str]:
    """``kelpie ARGS`` in a fresh process, as a user runs it (this checkout's package)."""
    return subprocess.run(
        [sys.executable, "-m", "kelpie.cli", *args],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_transfers_workload_prints_transfers_against_invocations_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    lmdb = f"lmdb://{tmp_path}/store"
    result = _kelpie(
        "bench", "--workload", "transfers", "--storage", lmdb, "--storage", "memory://",
        "--concurrency", "1,3", "--seconds", "0.2", "--slices", "2",
    )  # fmt: skip
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:5] == ["backend", "actors", "inv/s", "p99", "ms"] for line in lines)
    rows = [line.split() for line in lines if line.split()[:1] in (["lmdb"], ["memory"])]
    assert [(cells[0], cells[1]) for cells in rows] == [
        ("lmdb", "1"), ("lmdb", "3"), ("memory", "1"), ("memory", "3")
    ]  # fmt: skip
    for cells in rows:
        plain, transfers, ratio = (float(cells[i].replace(",", "")) for i in (2, 4, 6))
        assert plain > 0 and transfers > 0
        assert ratio == pytest.approx(transfers / plain, abs=0.01)
    summary = [line for line in lines if line.startswith("lmdb: transfers/s / inv/s: ")]
    assert len(summary) == 1 and "issue 16 target >= 0.4x at 3: " in summary[0], lines
    assert "; its 2 slices " in summary[0], summary  # the spread of the two rounds' ratios
    assert "the messaging index entries naming them" in result.stdout
    assert "kelpie bench: 4/4 figures (memory, 3 actors done)" in result.stderr
    listed = _kelpie("actors", lmdb, "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == ""  # no account, no kelpie.index shard left behind


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workload", "nope"], "--workload must be one of invocations, transfers, got 'nope'"),
        (["--workload", "transfers", "--keys", "1,5"], "--workload transfers does not take --keys"),
        (
            ["--workload", "transfers", "--compare-off", "--processes", "2"],
            "--workload transfers does not take --compare-off, --processes",
        ),
    ],
)
def test_transfers_workload_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["bench", "--storage", "memory://", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"kelpie bench: {message}\n"


async def test_transfers_on_a_store_the_bench_owns_also_deletes_the_index_shards(
    tmp_path: Path,
) -> None:
    from kelpie import open_storage
    from kelpie.bench import BenchOptions, Target
    from kelpie.bench.transfers import bench_transfers

    url = f"lmdb://{tmp_path}/own"
    options = BenchOptions(concurrencies=(2,), seconds=0.1, slices=1, workload="transfers")
    rows = await bench_transfers(Target("lmdb", url), options, owns_store=True)
    assert len(rows) == 1 and rows[0].transfers.done > 0
    async with open_storage(url) as storage:
        assert await storage.list_actors() == []
