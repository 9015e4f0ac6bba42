"""``?commit=multi``: WATCH/MULTI/EXEC commits on a real redis-server (ADR 0011).

The conformance suite and the runtime tests run over the ``redis-multi``
built-in backend (``kelpie.testing.backends``); these tests cover what is
particular to the mode: the fallback when an ACL denies scripting, stores
shared between the two modes, a WATCH lost with its connection, connections
given back clean after an abort, and a foreign key of the wrong type.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from kelpie.errors import (
    ConfigError,
    CorruptStateError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.redis.storage import RedisStorage, open_redis
from kelpie.testing.redis_server import RedisServer
from kelpie.testing.tcp_proxy import TcpProxy
from tests.redis_support import ALICE, bounded

BOB = ActorId("bank", "bob")


@pytest.fixture
async def multi(server: RedisServer) -> AsyncIterator[RedisStorage]:
    store = open_redis(server.url, commit="multi", socket_timeout=2.0, connect_timeout=1.0)
    yield store
    await store.close()


async def _no_scripting_user(raw: aioredis.Redis) -> tuple[str, str]:
    user, password = "noscript", secrets.token_hex(8)
    await raw.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-@scripting"
    )
    return user, password


async def test_commit_option_is_checked() -> None:
    with pytest.raises(ConfigError, match="commit"):
        open_redis("redis://127.0.0.1:1/0?commit=lua")
    assert open_redis("redis://127.0.0.1:1/0?commit=multi").commit_mode == "multi"
    assert open_redis("redis://127.0.0.1:1/0").commit_mode == "script"


async def test_acl_without_scripting_falls_back_to_multi(
    server: RedisServer, raw: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    user, password = await _no_scripting_user(raw)
    url = f"redis://{user}:{password}@127.0.0.1:{server.port}/0"
    caplog.set_level(logging.WARNING, logger="kelpie.storage.redis")
    async with open_redis(url) as store, open_redis(url) as other:
        assert store.commit_mode == "script"
        # A transaction begun in script mode (it remembered the version) whose
        # commit meets NOPERM: committed without the script, version checked.
        async with store.transaction(ALICE) as txn:
            assert await txn.get(b"n") is None
            await txn.set(b"n", b"1")
        assert store.commit_mode == "multi"
        assert await store.get(ALICE, b"n") == b"1"
        # The same fallback for a script-mode transaction that lost the race.
        async with other.transaction(ALICE) as late:
            assert await late.get(b"n") == b"1"
            await store.set(ALICE, b"n", b"2")
            await late.set(b"n", b"late")
            with pytest.raises(TransactionConflictError):
                await late.commit()
        assert other.commit_mode == "multi"
        # Multi mode from now on: a commit/conflict round trip.
        first, second = store.transaction(ALICE), store.transaction(ALICE)
        assert await first.get(b"n") == b"2"
        assert await second.get(b"n") == b"2"
        await first.set(b"n", b"3")
        await first.commit()
        await second.set(b"n", b"4")
        with pytest.raises(TransactionConflictError):
            await second.commit()
        assert await store.get(ALICE, b"n") == b"3"
        await store.set(BOB, b"w", b"write-only")  # never conflicts, needs no WATCH
        assert await store.list_keys(BOB) == [b"w"]
    fallbacks = [r for r in caplog.records if "refuses kelpie's commit script" in r.getMessage()]
    assert len(fallbacks) == 2  # once per storage, never again
    assert all(password not in r.getMessage() for r in caplog.records)


class _NoScriptsServer(RedisServer):
    """A redis-server with EVAL and EVALSHA renamed away: it answers "unknown command"."""

    def _command(self) -> list[str]:
        return [
            *super()._command(),
            "--rename-command",
            "EVALSHA",
            "",
            "--rename-command",
            "EVAL",
            "",
        ]


async def test_a_server_without_eval_falls_back_to_multi(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kelpie.storage.redis")
    with _NoScriptsServer(tmp_path / "noscripts") as server:
        async with open_redis(server.url) as store:
            await store.set(ALICE, b"a", b"1")  # write-only: the block without WATCH
            assert store.commit_mode == "multi"
            first, second = store.transaction(ALICE), store.transaction(ALICE)
            assert await first.get(b"a") == await second.get(b"a") == b"1"
            await first.set(b"a", b"2")
            await first.commit()
            await second.set(b"a", b"3")
            with pytest.raises(TransactionConflictError):
                await second.commit()
            assert await store.get(ALICE, b"a") == b"2"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unknown command" in m for m in messages) == 1


async def test_a_store_is_shared_by_both_modes(server: RedisServer, multi: RedisStorage) -> None:
    async with open_redis(server.url) as script:
        await script.set(ALICE, b"a", b"script")
        async with multi.transaction(ALICE) as txn:
            assert await txn.get(b"a") == b"script"
            await txn.set(b"b", b"multi")
            await txn.delete(b"a")
        assert await script.list_keys(ALICE) == [b"b"]
        # A script-mode reader conflicts with a multi-mode writer and vice versa.
        txn = script.transaction(ALICE)
        assert await txn.get(b"b") == b"multi"
        await multi.set(ALICE, b"b", b"again")
        await txn.set(b"b", b"lost")
        with pytest.raises(TransactionConflictError):
            await txn.commit()
        txn = multi.transaction(ALICE)
        assert await txn.list_keys() == [b"b"]
        await script.set(ALICE, b"c", b"script")
        await txn.set(b"b", b"lost")
        with pytest.raises(TransactionConflictError):
            await txn.commit()
        assert await multi.get(ALICE, b"b") == b"again"


async def test_read_only_validation_sees_a_later_commit(multi: RedisStorage) -> None:
    await multi.set(ALICE, b"a", b"1")
    txn = multi.transaction(ALICE)
    assert await txn.get(b"a") == b"1"
    await txn.commit()  # nothing moved: fine
    txn = multi.transaction(ALICE)
    assert await txn.get(b"a") == b"1"
    await multi.set(ALICE, b"a", b"2")
    with pytest.raises(TransactionConflictError):
        await txn.commit()


@pytest.mark.parametrize("max_connections", [2, 5])
async def test_abort_gives_the_connection_back_unwatched(
    server: RedisServer, max_connections: int
) -> None:
    # One pooled connection for the group-commit writes, the others for transactions
    # that read, kept idle by the storage between them (up to half the pool).
    async with open_redis(
        server.url, commit="multi", max_connections=max_connections, pool_timeout=2.0
    ) as store:
        for round_ in range(5):
            async with store.transaction(ALICE) as txn:
                await txn.get(b"a")
                await txn.abort()
            await store.set(ALICE, b"a", b"%d" % round_)  # would trip a leftover WATCH
            async with store.transaction(BOB) as txn:  # the same dedicated connection
                await txn.get(b"b")
                await txn.set(b"b", b"%d" % round_)
        assert await store.get(BOB, b"b") == b"4"
        with pytest.raises(RuntimeError):
            async with store.transaction(ALICE) as txn:
                await txn.get(b"a")
                raise RuntimeError("handler failed")
        async with store.transaction(ALICE) as txn:
            await txn.get(b"a")
            await txn.set(b"a", b"done")
        assert await store.get(ALICE, b"a") == b"done"


async def test_a_watch_lost_with_its_connection_fails_the_commit(
    server: RedisServer, raw: aioredis.Redis
) -> None:
    async with (
        TcpProxy(server.port) as proxy,
        open_redis(proxy.url(), commit="multi", socket_timeout=5.0) as store,
    ):
        txn = store.transaction(ALICE)
        assert await bounded(txn.get(b"a")) is None
        await proxy.cut_all()
        await store.set(BOB, b"x", b"reconnects")  # the storage itself carries on
        await txn.set(b"a", b"1")
        with pytest.raises(StorageUnavailableError, match="nothing was written"):
            await bounded(txn.commit())
        assert await raw.hlen(b"kelpie:{bank:alice}:d") == 0
        async with store.transaction(ALICE) as again:
            assert await again.get(b"a") is None
            await again.set(b"a", b"2")
        assert await store.get(ALICE, b"a") == b"2"


async def test_a_foreign_key_of_the_wrong_type_is_corrupt_state(
    multi: RedisStorage, raw: aioredis.Redis
) -> None:
    await raw.set(b"kelpie:{bank:alice}:d", b"not a hash")
    with pytest.raises(CorruptStateError):
        async with multi.transaction(ALICE) as txn:
            await txn.get(b"a")
    with pytest.raises(CorruptStateError, match="wrong type"):
        await multi.set(ALICE, b"a", b"1")
