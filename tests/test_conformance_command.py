"""``kelpie conformance`` and the documented pytest form, run as a user runs them:
in a fresh process, from a directory of the user's that holds no pytest configuration."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kelpie.conformance_cli import run_conformance

# The model-based test uses Hypothesis (the part that writes .hypothesis/);
# a handful of examples keeps it fast.
_MODEL_ONLY = ["-k", "TestModel", "--conformance-examples", "5"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(result.stdout[-3000:], result.stderr[-3000:], sep="\n")
    return result


def test_kelpie_conformance_leaves_nothing_in_the_current_directory(tmp_path: Path) -> None:
    result = _run(["-m", "kelpie.cli", "conformance", "memory://", *_MODEL_ONLY], tmp_path)
    assert result.returncode == 0
    assert "kelpie conformance: PASS memory://: 1 passed" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == []  # no .hypothesis, no cache


def test_the_documented_pytest_form_emits_no_deprecation_warning(tmp_path: Path) -> None:
    # Outside kelpie's repository no configuration file sets pytest-asyncio's
    # asyncio_default_fixture_loop_scope; the plugin must choose it, or
    # pytest-asyncio warns at configure time (an error under this -W).
    result = _run(
        [
            "-m",
            "pytest",
            "--pyargs",
            "kelpie.testing.conformance",
            "-p",
            "kelpie.testing.plugin",
            "--storage-url=memory://",
            "-W",
            "error::pytest.PytestDeprecationWarning",
            "-k",
            "TestTransactions or TestModel",
            "--conformance-examples",
            "5",
            "-p",
            "no:cacheprovider",
        ],
        tmp_path,
    )
    output = result.stdout + result.stderr
    assert "PytestDeprecationWarning" not in output
    assert "is unset" not in output
    assert "asyncio_default_fixture_loop_scope=function" in output  # pytest's header
    assert result.returncode == 0
    assert " passed" in result.stdout and " failed" not in result.stdout


def test_a_missing_test_package_names_the_conformance_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_find_spec = importlib.util.find_spec

    def without_hypothesis(name: str, *args: Any) -> Any:
        return None if name == "hypothesis" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_hypothesis)
    assert run_conformance("memory://", []) == 2
    err = capsys.readouterr().err
    assert "needs hypothesis" in err and "pip install 'kelpie[conformance]'" in err, err


def test_an_unreachable_server_stops_at_once_with_one_line(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens there; the URL carries a password.
    started = time.monotonic()
    result = _run(
        ["-m", "kelpie.cli", "conformance", "redis://user:s3cret@127.0.0.1:1/0"], tmp_path
    )
    assert time.monotonic() - started < 20  # the import of pytest and kelpie, one probe
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("kelpie conformance: cannot use redis://user:***@127.0.0.1:1/0: ")
    assert "StorageUnavailableError" in lines[0] and "s3cret" not in result.stderr


def test_a_conformance_run_leaves_no_key_in_a_real_redis(tmp_path: Path) -> None:
    from kelpie.testing.redis_server import RedisServer

    redis = pytest.importorskip("redis")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        url = f"{server.url}?prefix=conformance-run"
        client = redis.Redis(host="127.0.0.1", port=server.port)
        client.set(b"conformance-run:mine", b"the user's")
        result = _run(
            ["-m", "kelpie.cli", "conformance", url, "--conformance-examples", "5"], tmp_path
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        try:
            keys = sorted(client.scan_iter(count=1000))
        finally:
            client.close()
    finally:
        server.stop()
    # The run wrote under a private prefix below "conformance-run" and removed
    # it: no actor, and no store-wide key (format marker, deletes counter) left;
    # the user's key written before the run is untouched.
    print(f"{len(keys)} keys left: {keys}")
    assert keys == [b"conformance-run:mine"], keys
    assert "PASS" in result.stdout
