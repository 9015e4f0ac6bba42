"""A real Redis Cluster on loopback (3 masters + 3 replicas) for the cluster tests."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from kelpie.testing.redis_cluster import RedisCluster


def _missing() -> str | None:
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            return f"no {binary} executable on PATH: Redis Cluster tests need Redis 7"
    return None


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One healthy cluster for the session; tests that break nodes start their own."""
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A cluster of its own, for a test that kills or pauses nodes."""
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster-own")) as cluster:
        yield cluster


@pytest.fixture
def prefix() -> str:
    return f"kt-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store_url(redis_cluster: RedisCluster, prefix: str) -> str:
    """The session cluster under a fresh prefix (used by the runtime-process tests)."""
    return f"{redis_cluster.url}?prefix={prefix}"
