"""Real servers for the reliability tests: each test gets its own, on a free loopback port."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kelpie.testing.redis_server import RedisServer

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A plain redis-server (no persistence)."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with AOF and ``appendfsync always``: every acknowledged write is on disk."""
    server = RedisServer(tmp_path / "redis-aof", appendonly=True, appendfsync="always")
    server.start()
    try:
        yield server
    finally:
        server.kill()
