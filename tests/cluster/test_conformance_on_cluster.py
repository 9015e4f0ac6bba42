"""The whole conformance suite and the runtime tests, on a real Redis Cluster.

Runs ``pytest backends_tests tests/runtime --storage-url=redis+cluster://...``
in a subprocess against the session cluster and asserts it passed. The same
command works by hand against any cluster (see docs/scale-out.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kelpie.testing.redis_cluster import RedisCluster

ROOT = Path(__file__).resolve().parents[2]


def _run_suite(url: str) -> tuple[int, str]:
    command = [
        sys.executable, "-m", "pytest",
        "backends_tests", "tests/runtime",
        "-q", "-p", "no:cacheprovider",
        "--storage-url", url,
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    return result.returncode, result.stdout + result.stderr


def _summary(output: str) -> str:
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    return lines[-1] if lines else output[-2000:]


def test_conformance_suite_and_runtime_tests_pass_on_redis_cluster(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    url = f"{redis_cluster.url}?prefix={prefix}"
    code, output = _run_suite(url)
    summary = _summary(output)
    print(f"conformance + runtime tests on {redis_cluster.url}: {summary}")
    assert code == 0, output[-6000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    assert passed >= 90, summary
    assert "failed" not in summary and "error" not in summary, summary


@pytest.mark.soak  # a second full run (~15 s): pytest tests/cluster -m soak
def test_conformance_suite_with_wait_replicas_passes_on_redis_cluster(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    url = f"{redis_cluster.url}?prefix={prefix}&wait_replicas=1&wait_timeout_ms=2000"
    code, output = _run_suite(url)
    summary = _summary(output)
    print(f"with wait_replicas=1: {summary}")
    assert code == 0, output[-6000:]
    assert "failed" not in summary and "error" not in summary, summary
