"""``redis+cluster://`` pointed at a plain redis-server (no cluster mode): a ``ConfigError``
that names the server and keeps the URL's options, never "unavailable, retry"."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kelpie import ActorId, open_storage
from kelpie.errors import ConfigError, KelpieError, StorageUnavailableError
from kelpie.storage.redis.cluster import open_redis_cluster
from kelpie.testing.redis_server import RedisServer

_PASSWORD = "pw-n0t-in-messages"
_QUERY = "prefix=app17&wait_replicas=0&connect_timeout=1.5"

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server started without cluster mode."""
    with RedisServer(tmp_path / "plain") as server:
        yield server


@pytest.fixture
def plain_server_with_password(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "plain-pw", password=_PASSWORD) as server:
        yield server


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _first_use_error(url: str) -> KelpieError:
    actor = ActorId("acct", "not-a-cluster")
    async with open_storage(url) as storage:
        with pytest.raises(KelpieError) as read:
            await storage.get(actor, b"k")
        with pytest.raises(KelpieError) as commit:
            async with storage.transaction(actor) as txn:
                await txn.set(b"k", b"v")
        # The same verdict every time: the slot map is never "refreshed" into a success.
        assert type(read.value) is type(commit.value)
        return read.value


def test_the_description_keeps_the_query_and_hides_the_password() -> None:
    storage = open_redis_cluster(f"redis+cluster://u:{_PASSWORD}@127.0.0.1:7000?{_QUERY}")
    assert _PASSWORD not in repr(storage)
    assert f"redis+cluster://u:***@127.0.0.1:7000?{_QUERY}" in repr(storage)


@needs_redis
async def test_a_plain_server_is_a_config_error_saying_it_is_not_in_cluster_mode(
    plain_server: RedisServer,
) -> None:
    url = f"redis+cluster://127.0.0.1:{plain_server.port}?{_QUERY}"
    error = await _first_use_error(url)
    print(error)
    assert isinstance(error, ConfigError)
    assert not isinstance(error, StorageUnavailableError)
    message = str(error)
    assert f"server 127.0.0.1:{plain_server.port}" in message
    assert "is not in cluster mode" in message
    assert url in message  # the whole URL, query string included


@needs_redis
async def test_a_plain_server_with_a_password_is_named_without_the_password(
    plain_server_with_password: RedisServer,
) -> None:
    port = plain_server_with_password.port
    url = f"redis+cluster://:{_PASSWORD}@127.0.0.1:{port}?{_QUERY}"
    error = await _first_use_error(url)
    print(error)
    assert isinstance(error, ConfigError)
    message = str(error)
    assert "is not in cluster mode" in message
    assert f"redis+cluster://:***@127.0.0.1:{port}?{_QUERY}" in message
    assert _PASSWORD not in message and _PASSWORD not in repr(error.__cause__)


@needs_redis
async def test_a_plain_server_among_unreachable_seeds_is_still_a_config_error(
    plain_server: RedisServer,
) -> None:
    dead = _dead_port()
    url = f"redis+cluster://127.0.0.1:{dead},127.0.0.1:{plain_server.port}?{_QUERY}"
    error = await _first_use_error(url)
    print(error)
    assert isinstance(error, ConfigError)
    assert f"server 127.0.0.1:{plain_server.port}" in str(error)
    assert "is not in cluster mode" in str(error)


@needs_redis
async def test_rejected_credentials_are_a_config_error_not_unavailable(
    plain_server_with_password: RedisServer,
) -> None:
    port = plain_server_with_password.port
    error = await _first_use_error(f"redis+cluster://:wrong-{_PASSWORD}@127.0.0.1:{port}")
    print(error)
    assert isinstance(error, ConfigError)
    assert "credentials" in str(error)
    assert _PASSWORD not in str(error)
