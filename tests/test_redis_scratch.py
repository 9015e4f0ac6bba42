"""``scratch_url``: a run-private Redis key prefix below the user's; other URLs unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from kelpie import ActorId, open_storage
from kelpie.storage.redis.scratch import drop_prefix, scratch_url
from kelpie.storage.url import StorageURL
from kelpie.testing.redis_server import RedisServer


def test_the_private_prefix_is_below_the_users_and_the_rest_of_the_url_is_kept() -> None:
    url = scratch_url("redis://user:s3cret@127.0.0.1:7000/2?prefix=app&commit=multi", "bench")
    parsed = StorageURL.parse(url)
    options = parsed.options
    assert options["prefix"].startswith("app:bench-") and len(options["prefix"]) == 18
    assert options["commit"] == "multi"
    assert (parsed.username, parsed.password, parsed.port, parsed.path) == (
        "user",
        "s3cret",
        7000,
        "/2",
    )
    default = StorageURL.parse(scratch_url("redis://127.0.0.1", "conformance")).options
    assert default["prefix"].startswith("kelpie:conformance-")
    assert scratch_url("redis://h", "x") != scratch_url("redis://h", "x")  # one per run
    for other in ("lmdb:///tmp/x", "memory://", "sqlite:///tmp/x.db"):
        assert scratch_url(other, "conformance") == other


async def test_drop_prefix_removes_the_run_s_keys_and_no_other(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    client = aioredis.Redis(host="127.0.0.1", port=server.port)
    try:
        await client.set("app:kept", b"1")
        await client.set("app:bench-0000:not-this-run", b"1")
        url = scratch_url(f"{server.url}?prefix=app", "bench")
        store = open_storage(url)
        try:
            for n in range(50):
                await store.set(ActorId("ns", f"a{n}"), b"k", b"v")
            await store.delete_actor(ActorId("ns", "a0"))
        finally:
            await store.close()
        assert await drop_prefix(url) > 50
        assert sorted(await client.keys("*")) == [b"app:bench-0000:not-this-run", b"app:kept"]
        with pytest.raises(ValueError, match="needs a Redis URL"):
            await drop_prefix(f"lmdb://{tmp_path / 'lmdb'}")
    finally:
        await client.aclose()
        server.stop()
