"""The ``redis://`` backend under faults: honest outcomes, nothing half-written.

Every test runs its own ``redis-server`` on a free loopback port (or fakeredis
where noted); faults come from killing that server, filling its memory,
foreign keys of the wrong type, or ``FaultProxy``, a loopback TCP proxy that
can cut connections or swallow the reply to a commit (the ``EVALSHA``/``EVAL``
of the check-and-set script, ADR 0008). The rest of the Redis-specific tests
are in ``test_redis_backend.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex

from kelpie.errors import (
    CommitOutcomeUnknownError,
    CorruptStateError,
    KelpieError,
    StorageFullError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.storage.redis.keys import actor_keys
from kelpie.storage.redis.storage import (
    RedisStorage,
    open_redis,
)
from kelpie.testing.redis_server import RedisServer
from tests.redis_support import ALICE, bounded


@pytest.fixture
async def storage(server: RedisServer) -> AsyncIterator[RedisStorage]:
    store = open_redis(server.url, socket_timeout=2.0, connect_timeout=1.0)
    yield store
    await store.close()


# -- a loopback proxy that injects connection faults ---------------------------------

COMMIT_MARKERS = (b"$7\r\nEVALSHA\r\n", b"$4\r\nEVAL\r\n")


class FaultProxy:
    """Forwards 127.0.0.1:port to a redis server; can cut or starve connections.

    ``mode`` "pass" forwards everything; "drop_commit_reply" forwards a command
    stream containing a commit (EVALSHA/EVAL), waits for the server's reply (so
    the commit has landed) and then resets the client connection without
    forwarding it; "hold_commit_reply" swallows that reply and keeps the
    connection open.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self.port = 0
        self.commit_replies_dropped = 0
        self._server: asyncio.Server | None = None
        self._clients: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._clients.append(cwriter)
        commit_forwarded = False

        async def upstream() -> None:
            nonlocal commit_forwarded
            try:
                while data := await creader.read(65536):
                    if any(marker in data for marker in COMMIT_MARKERS) and self.mode != "pass":
                        commit_forwarded = True
                    swriter.write(data)
                    await swriter.drain()
            except OSError:
                pass
            finally:
                swriter.close()

        async def downstream() -> None:
            try:
                while data := await sreader.read(65536):
                    if commit_forwarded and self.mode == "drop_commit_reply":
                        self.commit_replies_dropped += 1
                        cwriter.transport.abort()
                        return
                    if commit_forwarded and self.mode == "hold_commit_reply":
                        self.commit_replies_dropped += 1
                        continue
                    cwriter.write(data)
                    await cwriter.drain()
            except OSError:
                pass
            finally:
                cwriter.close()
                swriter.close()

        for coro in (upstream(), downstream()):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def cut_all(self) -> None:
        """Reset every client connection (the server side sees them close too)."""
        for writer in self._clients:
            writer.transport.abort()
        self._clients.clear()
        await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop listening (new connections are refused) and cut every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.cut_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def proxy(server: RedisServer) -> AsyncIterator[FaultProxy]:
    fault_proxy = FaultProxy(server.port)
    await fault_proxy.start()
    yield fault_proxy
    await fault_proxy.close()


# -- honest outcomes under faults ---------------------------------------------------


async def test_killed_server_gives_unavailable_and_the_storage_recovers_by_itself(
    server: RedisServer, storage: RedisStorage
) -> None:
    await storage.set(ALICE, b"k", b"before")
    open_txn = storage.transaction(ALICE)
    assert await open_txn.get(b"k") == b"before"

    server.kill()
    with pytest.raises(StorageUnavailableError) as info:
        await bounded(storage.get(ALICE, b"k"))
    assert isinstance(info.value.__cause__, rex.RedisError)
    with pytest.raises(StorageUnavailableError):
        await bounded(storage.list_keys(ALICE))
    with pytest.raises(StorageUnavailableError):
        await bounded(storage.set(ALICE, b"k", b"during"))
    await open_txn.set(b"k", b"open")
    with pytest.raises(StorageUnavailableError):
        await bounded(open_txn.commit())

    server.start()
    assert await bounded(storage.get(ALICE, b"k")) is None  # no persistence configured
    await bounded(storage.set(ALICE, b"k", b"after"))
    async with storage.transaction(ALICE) as txn:
        assert await txn.get(b"k") == b"after"
        await txn.set(b"k", b"again")
    assert await storage.get(ALICE, b"k") == b"again"


async def test_acknowledged_commits_survive_a_kill_with_appendfsync_always(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "aof", appendonly=True, appendfsync="always") as srv:
        store = open_redis(srv.url)
        try:
            for n in range(20):
                async with store.transaction(ALICE) as txn:
                    await txn.get(b"n")
                    await txn.set(b"n", b"%d" % n)
                    await txn.set(b"k%d" % n, b"x")
            srv.kill()
            srv.start()
            assert await bounded(store.get(ALICE, b"n")) == b"19"
            assert len(await store.list_keys(ALICE, b"k")) == 20
        finally:
            await store.close()


async def test_lost_commit_reply_is_outcome_unknown_and_the_commit_landed(
    proxy: FaultProxy, raw: aioredis.Redis
) -> None:
    store = open_redis(proxy.url)
    try:
        await store.set(ALICE, b"n", b"0")
        proxy.mode = "drop_commit_reply"
        txn = store.transaction(ALICE)
        assert await txn.get(b"n") == b"0"
        await txn.set(b"n", b"1")
        with pytest.raises(CommitOutcomeUnknownError) as info:
            await bounded(txn.commit())
        assert isinstance(info.value.__cause__, rex.RedisError)
        assert proxy.commit_replies_dropped == 1
        assert await raw.hget(actor_keys("kelpie", ALICE).data, b"n") == b"1"

        # a write-only commit whose reply is lost is reported the same way
        with pytest.raises(CommitOutcomeUnknownError):
            await bounded(store.set(ALICE, b"w", b"1"))
        assert await raw.hget(actor_keys("kelpie", ALICE).data, b"w") == b"1"

        proxy.mode = "pass"
        assert await store.get(ALICE, b"n") == b"1"  # the storage carries on by itself
    finally:
        await store.close()


async def test_commit_reply_timeout_is_outcome_unknown(
    proxy: FaultProxy, raw: aioredis.Redis
) -> None:
    store = open_redis(proxy.url, socket_timeout=0.5)
    try:
        await store.set(ALICE, b"first", b"v")  # the script is loaded: EVALSHA will run it
        proxy.mode = "hold_commit_reply"
        with pytest.raises(CommitOutcomeUnknownError):
            await bounded(store.set(ALICE, b"k", b"v"))
        assert await raw.hget(actor_keys("kelpie", ALICE).data, b"k") == b"v"
    finally:
        await store.close()


async def test_connection_cut_between_read_and_commit_keeps_the_version_check(
    proxy: FaultProxy, raw: aioredis.Redis
) -> None:
    store = open_redis(proxy.url)
    data_key = actor_keys("kelpie", ALICE).data
    try:
        await store.set(ALICE, b"n", b"0")
        txn = store.transaction(ALICE)
        assert await txn.get(b"n") == b"0"
        await proxy.cut_all()  # no WATCH to lose: the commit reconnects and checks the version
        await txn.set(b"n", b"1")
        await bounded(txn.commit())
        assert await raw.hget(data_key, b"n") == b"1"

        txn = store.transaction(ALICE)
        assert await txn.get(b"n") == b"1"
        await proxy.cut_all()
        await raw.incr(actor_keys("kelpie", ALICE).version)  # a commit lands meanwhile
        await txn.set(b"n", b"2")
        with pytest.raises(TransactionConflictError):
            await bounded(txn.commit())
        assert await raw.hget(data_key, b"n") == b"1"

        # a connection cut while idle is replaced transparently
        await proxy.cut_all()
        await store.set(ALICE, b"n", b"2")
        assert await raw.hget(data_key, b"n") == b"2"

        # and with nothing listening, a write-only commit cannot even connect
        await proxy.close()
        with pytest.raises(StorageUnavailableError):
            await bounded(store.set(ALICE, b"n", b"3"))
        assert await raw.hget(data_key, b"n") == b"2"
    finally:
        await store.close()


async def test_a_failed_read_fails_the_transaction_and_writes_nothing(
    proxy: FaultProxy, raw: aioredis.Redis
) -> None:
    store = open_redis(proxy.url)
    try:
        await store.set(ALICE, b"n", b"0")
        txn = store.transaction(ALICE)
        await txn.get(b"n")
        await proxy.cut_all()
        assert await bounded(txn.get(b"other")) is None  # the next read reconnects
        await proxy.close()
        with pytest.raises(StorageUnavailableError):
            await bounded(txn.get(b"more"))
        await proxy.start()
        await txn.set(b"n", b"1")
        with pytest.raises(StorageUnavailableError):
            await txn.commit()  # it could not read what it wanted: never commit blind
        assert await raw.hget(actor_keys("kelpie", ALICE).data, b"n") == b"0"
    finally:
        await store.close()


async def test_fakeredis_outage_maps_like_a_real_one() -> None:
    fake_server = fakeredis.FakeServer()
    store = RedisStorage(fakeredis.FakeAsyncRedis(server=fake_server))
    try:
        await store.set(ALICE, b"k", b"v")
        txn = store.transaction(ALICE)
        await txn.get(b"k")
        fake_server.connected = False
        with pytest.raises(StorageUnavailableError):
            await store.get(ALICE, b"k")
        with pytest.raises(StorageUnavailableError):
            await store.set(ALICE, b"k", b"w")
        await txn.set(b"k", b"t")
        with pytest.raises(StorageUnavailableError):
            await txn.commit()
        fake_server.connected = True
        assert await store.get(ALICE, b"k") == b"v"
    finally:
        await store.close()


async def test_out_of_memory_is_storage_full_and_writes_nothing(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    await storage.set(ALICE, b"k", b"v")
    await raw.config_set("maxmemory-policy", "noeviction")
    await raw.config_set("maxmemory", "1")
    try:
        with pytest.raises(StorageFullError):
            await storage.set(ALICE, b"big", b"x" * 1000)
        txn = storage.transaction(ALICE)
        await txn.get(b"k")
        await txn.set(b"k", b"w")
        with pytest.raises(StorageFullError):
            await txn.commit()
    finally:
        await raw.config_set("maxmemory", "0")
    assert await storage.list_keys(ALICE) == [b"k"]
    assert await storage.get(ALICE, b"k") == b"v"


async def test_foreign_value_of_the_wrong_type_is_corrupt_state(
    storage: RedisStorage, raw: aioredis.Redis
) -> None:
    keys = actor_keys("kelpie", ALICE)
    await raw.set(keys.data, b"not a hash")
    with pytest.raises(CorruptStateError):
        await storage.get(ALICE, b"k")
    with pytest.raises(CorruptStateError):
        await storage.set(ALICE, b"k", b"v")


async def test_no_redis_exception_escapes_under_repeated_outages(
    server: RedisServer, storage: RedisStorage
) -> None:
    operations: list[Any] = [
        lambda: storage.get(ALICE, b"k"),
        lambda: storage.set(ALICE, b"k", b"v"),
        lambda: storage.delete(ALICE, b"k"),
        lambda: storage.list_keys(ALICE, b"k"),
    ]
    seen: set[type[BaseException]] = set()
    for round_ in range(3):
        txn = storage.transaction(ALICE)
        with contextlib.suppress(KelpieError):
            await txn.get(b"k")
        if round_ % 2 == 0:
            server.kill()
        else:
            server.stop()
        for operation in operations:
            try:
                await bounded(operation())
            except KelpieError as exc:
                seen.add(type(exc))
        with contextlib.suppress(KelpieError):
            await txn.set(b"k", b"t")
            await txn.commit()
        server.start()
        await bounded(storage.set(ALICE, b"k", b"ok"))
    assert seen == {StorageUnavailableError}
