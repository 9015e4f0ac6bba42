"""What the Redis backend's test modules share: a private server, a raw client, a hang guard.

The root ``conftest.py`` loads this module as a plugin, so ``server`` and
``raw`` are fixtures everywhere under tests/; the helpers are imported.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis.asyncio as aioredis

from kelpie.identity import ActorId
from kelpie.testing.redis_server import RedisServer

__all__ = ["ALICE", "HANG_GUARD", "bounded", "raw", "server"]

T = TypeVar("T")
HANG_GUARD = 30.0  # only a guard against hangs; no test asserts on time

ALICE = ActorId("bank", "alice")


async def bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, HANG_GUARD)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as srv:
        yield srv


@pytest.fixture
async def raw(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url)
    yield client
    await client.aclose()
