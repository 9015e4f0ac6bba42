"""Redis-specific behaviour of the ``redis://`` backend (the generic contract is in backends_tests).

Every test runs its own ``redis-server`` on a free loopback port (or fakeredis
where noted). Faults (killed servers, cut connections, lost replies) are in
``test_redis_faults.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.crc import key_slot

from kelpie.errors import (
    ConfigError,
    CorruptStateError,
    StorageClosedError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.redis.keys import actor_keys, hash_tag, lex_range
from kelpie.storage.redis.pipeline import pack
from kelpie.storage.redis.storage import (
    _EVAL_HEAD,
    _EVALSHA_HEAD,
    COMMIT_SCRIPT,
    RedisStorage,
    _commit_call,
    open_redis,
)
from kelpie.storage.registry import open_storage
from kelpie.testing.redis_server import RedisServer
from tests.redis_support import ALICE, bounded


@pytest.fixture
async def storage(server: RedisServer) -> AsyncIterator[RedisStorage]:
    store = open_redis(server.url, socket_timeout=2.0, connect_timeout=1.0)
    yield store
    await store.close()


@pytest.fixture(params=["redis-server", "fakeredis"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[RedisStorage, aioredis.Redis]]:
    """The same RedisStorage code on a real server and on fakeredis, with a raw client."""
    if request.param == "fakeredis":
        fake_server = fakeredis.FakeServer()
        store = RedisStorage(fakeredis.FakeAsyncRedis(server=fake_server))
        raw_client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=fake_server)
        yield store, raw_client
        await store.close()
        await raw_client.aclose()
        return
    with RedisServer(tmp_path / "redis") as srv:
        store = open_redis(srv.url)
        raw_client = aioredis.Redis.from_url(srv.url)
        yield store, raw_client
        await store.close()
        await raw_client.aclose()


# -- key layout ------------------------------------------------------------------------


async def _all_keys(raw_client: aioredis.Redis) -> set[bytes]:
    # The test may list the whole database; the backend never does (no KEYS/SCAN).
    return {key.encode() if isinstance(key, str) else key for key in await raw_client.keys("*")}


async def test_every_key_stays_under_the_prefix_and_outside_keys_are_untouched(
    backend: tuple[RedisStorage, aioredis.Redis],
) -> None:
    store, raw_client = backend
    await raw_client.set(b"sentinel", b"keep me")
    await raw_client.hset(b"kelpie2:{bank:alice}:d", b"k", b"foreign")  # a look-alike prefix
    for n in range(5):
        actor = ActorId("bank", f"acct-{n}")
        async with store.transaction(actor) as txn:
            await txn.get(b"balance")
            await txn.set(b"balance", b"%d" % n)
            await txn.set(b"other", b"x")
        await store.delete(actor, b"other")
        assert await store.list_keys(actor) == [b"balance"]

    keys = await _all_keys(raw_client)
    ours = {key for key in keys if key.startswith(b"kelpie:")}
    assert keys - ours == {b"sentinel", b"kelpie2:{bank:alice}:d"}
    assert await raw_client.get(b"sentinel") == b"keep me"
    assert await raw_client.hgetall(b"kelpie2:{bank:alice}:d") == {b"k": b"foreign"}
    assert await store.get(ALICE, b"k") is None
    assert len(ours) == 16  # v, d and k for each of the five actors, and the actor index


async def test_custom_prefix_isolates_two_storages_on_one_database(server: RedisServer) -> None:
    first = open_redis(server.url + "?prefix=app1")
    second = open_storage(server.url, prefix="app1.staging")
    try:
        await first.set(ALICE, b"k", b"one")
        await second.set(ALICE, b"k", b"two")
        assert await first.get(ALICE, b"k") == b"one"
        assert await second.get(ALICE, b"k") == b"two"
        assert await first.list_keys(ALICE) == [b"k"]
    finally:
        await first.close()
        await second.close()


def test_all_keys_of_one_actor_share_one_hash_slot() -> None:
    actors = [
        ALICE,
        ActorId("a:b", "c"),
        ActorId("{", "}"),
        ActorId("}x{", "{y}"),
        ActorId("ns", "é ü\x00/"),
    ]
    for actor in actors:
        keys = actor_keys("kelpie", actor)
        slots = {key_slot(keys.version), key_slot(keys.data), key_slot(keys.index)}
        assert slots == {key_slot(hash_tag(actor))}
        assert b"{" not in hash_tag(actor) and b"}" not in hash_tag(actor)
        assert keys.data.startswith(b"kelpie:{" + hash_tag(actor) + b"}:")


def test_hash_tags_are_injective_for_hostile_ids() -> None:
    hostile = [
        ActorId("a:b", "c"),
        ActorId("a", "b:c"),
        ActorId("a%3Ab", "c"),
        ActorId("a", "b%3Ac"),
        ActorId("{", "}"),
        ActorId("}", "{"),
        ActorId("a/b", "c"),
        ActorId("a", "b/c"),
        ActorId("a\x00", "b"),
        ActorId("a", "\x00b"),
        ActorId(" ", " "),
        ActorId("é", "ü"),
        ActorId("e\u0301", "ü"),
    ]
    tags = [hash_tag(actor) for actor in hostile]
    assert len(set(tags)) == len(hostile)


async def test_hostile_actor_ids_never_see_each_others_records(
    backend: tuple[RedisStorage, aioredis.Redis],
) -> None:
    store, _ = backend
    hostile = [
        ActorId("a:b", "c"),
        ActorId("a", "b:c"),
        ActorId("a%3Ab", "c"),
        ActorId("{", "}"),
        ActorId("}", "{"),
        ActorId("a/b", "c"),
        ActorId("a", "b/c"),
        ActorId("a\x00", "b"),
        ActorId(" ", " "),
        ActorId("é", "ü"),
    ]
    for n, actor in enumerate(hostile):
        await store.set(actor, b"who", str(actor).encode() + b"#%d" % n)
        await store.set(actor, b"only-%d" % n, b"x")
    for n, actor in enumerate(hostile):
        assert await store.get(actor, b"who") == str(actor).encode() + b"#%d" % n
        assert await store.list_keys(actor) == sorted([b"who", b"only-%d" % n])


# -- list_keys -------------------------------------------------------------------------


def test_lex_range_selects_exactly_the_prefix() -> None:
    assert lex_range(b"") == (b"-", b"+")
    assert lex_range(b"ab") == (b"[ab", b"(ac")
    assert lex_range(b"a\xff") == (b"[a\xff", b"(b")
    assert lex_range(b"\xff\xff") == (b"[\xff\xff", b"+")


async def test_list_keys_is_prefix_exact_and_bytewise_sorted_with_high_bytes(
    backend: tuple[RedisStorage, aioredis.Redis],
) -> None:
    store, _ = backend
    keys = [
        b"a",
        b"a\x00",
        b"a\xff",
        b"a\xff\xff",
        b"a\xff\x00",
        b"ab",
        b"b",
        b"\xff",
        b"\xff\xff",
        b"\xff\xfe",
        b"\x00",
        b"[a",
        b"(a",
        b"-",
        b"+",
    ]
    async with store.transaction(ALICE) as txn:
        for key in keys:
            await txn.set(key, key)
    for prefix in [b"", b"a", b"a\xff", b"\xff", b"\xff\xff", b"[", b"(", b"-", b"+", b"zz"]:
        expected = sorted(key for key in keys if key.startswith(prefix))
        assert await store.list_keys(ALICE, prefix) == expected, prefix
        async with store.transaction(ALICE) as txn:
            assert await txn.list_keys(prefix) == expected, prefix


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_workload_matches_a_dict_model(
    backend: tuple[RedisStorage, aioredis.Redis], seed: int
) -> None:
    print(f"seed={seed}")
    rng = random.Random(seed)
    store, _ = backend
    alphabet = [b"\x00", b"\x01", b"a", b"b", b"[", b"(", b"-", b"+", b"\xfe", b"\xff"]
    actors = [ActorId("m", "x"), ActorId("m:x", "y"), ActorId("m", "x:y")]
    model: dict[ActorId, dict[bytes, bytes]] = {actor: {} for actor in actors}

    def random_key() -> bytes:
        return b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))

    for step in range(150):
        actor = rng.choice(actors)
        records = model[actor]
        async with store.transaction(actor) as txn:
            pending = dict(records)
            for _ in range(rng.randint(1, 4)):
                action = rng.random()
                key = random_key()
                if action < 0.45:
                    value = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 8)))
                    await txn.set(key, value)
                    pending[key] = value
                elif action < 0.65:
                    await txn.delete(key)
                    pending.pop(key, None)
                elif action < 0.85:
                    assert await txn.get(key) == pending.get(key), (seed, step)
                else:
                    prefix = random_key()[: rng.randint(0, 2)]
                    expected = sorted(k for k in pending if k.startswith(prefix))
                    assert await txn.list_keys(prefix) == expected, (seed, step)
        model[actor] = pending
    for actor, records in model.items():
        assert await store.list_keys(actor) == sorted(records)
        for key, value in records.items():
            assert await store.get(actor, key) == value


async def test_wide_commits_keep_the_index_equal_to_the_data_hash(
    backend: tuple[RedisStorage, aioredis.Redis],
) -> None:
    # Puts are written in chunks of 200 and index only chunks that add a key
    # (ADR 0008): mix new and existing keys across chunk boundaries, with
    # values around the packer's header-table size, then delete in chunks of 400.
    store, raw_client = backend
    keys = actor_keys("kelpie", ALICE)
    model: dict[bytes, bytes] = {}
    sizes = [0, 1, 1023, 1024, 5000]
    steps = [range(0, 150), range(100, 450), range(0, 450), range(440, 460)]
    for step, names in enumerate(steps):
        async with store.transaction(ALICE) as txn:
            await txn.get(b"k0")
            for n in names:
                value = bytes([n % 251]) * sizes[(n + step) % len(sizes)]
                await txn.set(b"k%03d" % n, value)
                model[b"k%03d" % n] = value
        assert await store.list_keys(ALICE) == sorted(model), step
        assert sorted(await raw_client.hkeys(keys.data)) == sorted(model), step
        assert await raw_client.zrange(keys.index, 0, -1) == sorted(model), step
    assert await store.get(ALICE, b"k123") == model[b"k123"]
    async with store.transaction(ALICE) as txn:
        for n in range(3, 460, 1):
            if n % 50:
                await txn.delete(b"k%03d" % n)
                model.pop(b"k%03d" % n)
        await txn.set(b"k001", b"kept")  # a put in the same commit as the deletes
        model[b"k001"] = b"kept"
    assert await store.list_keys(ALICE) == sorted(model)
    assert sorted(await raw_client.hkeys(keys.data)) == sorted(model)
    assert await raw_client.zrange(keys.index, 0, -1) == sorted(model)
    for key, value in model.items():
        assert await store.get(ALICE, key) == value


def test_commit_requests_are_the_resp_redis_py_would_send() -> None:
    # An independent oracle for kelpie's hand-packed commit call: redis-py's packer.
    rng = random.Random(7)
    print("seed=7")
    keys = actor_keys("kelpie", ALICE)
    packer = Connection()
    for trial in range(200):
        writes: dict[bytes, bytes | None] = {}
        for _ in range(rng.randint(1, 40)):
            key = rng.randbytes(rng.choice([1, 7, 256]))
            size = rng.choice([0, 1, 1023, 1024, 70_000])
            writes[key] = None if rng.random() < 0.3 else rng.randbytes(size)
        expected = rng.choice([b"", b"17"])
        puts = [part for key, value in writes.items() if value is not None for part in (key, value)]
        deleted = [key for key, value in writes.items() if value is None]
        for head, name, body in (
            (_EVALSHA_HEAD, b"EVALSHA", hashlib.sha1(COMMIT_SCRIPT).hexdigest().encode()),
            (_EVAL_HEAD, b"EVAL", COMMIT_SCRIPT),
        ):
            command = [name, body, b"5", keys.version, keys.data, keys.index, keys.actors]
            command += [keys.deletes, expected, b"%d" % (len(puts) // 2), keys.member]
            command += [*puts, *deleted]
            assert _commit_call(head, keys, expected, writes) == b"".join(
                packer.pack_command(*command)
            ), trial
            assert pack([command, (b"GET", b"x")]) == b"".join(
                packer.pack_commands([command, (b"GET", b"x")])
            ), trial


# -- transactions --------------------------------------------------------------------


async def test_conflicting_commit_writes_nothing(
    backend: tuple[RedisStorage, aioredis.Redis],
) -> None:
    store, _ = backend
    await store.set(ALICE, b"n", b"0")
    txn = store.transaction(ALICE)
    assert await txn.get(b"n") == b"0"
    await store.set(ALICE, b"n", b"10")  # lands after txn's read
    await txn.set(b"n", b"1")
    await txn.set(b"extra", b"x")
    with pytest.raises(TransactionConflictError):
        await txn.commit()
    assert await store.get(ALICE, b"n") == b"10"
    assert await store.list_keys(ALICE) == [b"n"]


async def test_write_only_transactions_never_conflict_and_bump_the_version(
    backend: tuple[RedisStorage, aioredis.Redis],
) -> None:
    store, raw_client = backend
    first = store.transaction(ALICE)
    second = store.transaction(ALICE)
    await first.set(b"k", b"1")
    await second.set(b"k", b"2")
    await second.commit()
    await first.commit()
    assert await store.get(ALICE, b"k") == b"1"
    assert await raw_client.get(actor_keys("kelpie", ALICE).version) == b"2"


async def test_concurrent_read_modify_write_increments_equal_successes(
    storage: RedisStorage,
) -> None:
    counter = ActorId("counter", "hot")
    await storage.set(counter, b"n", b"0")

    async def increment() -> bool:
        async with storage.transaction(counter) as txn:
            current = int(await txn.get(b"n") or b"0")
            await asyncio.sleep(0)  # let the others read the same value
            await txn.set(b"n", b"%d" % (current + 1))
            try:
                await txn.commit()
            except TransactionConflictError:
                return False
        return True

    results = await bounded(asyncio.gather(*(increment() for _ in range(20))))
    successes = sum(results)
    assert 1 <= successes <= 20
    assert await storage.get(counter, b"n") == b"%d" % successes
    print(f"20 concurrent increments: {successes} committed, {20 - successes} conflicted")

    async def increment_until_committed() -> None:
        while True:
            try:
                async with storage.transaction(counter) as txn:
                    current = int(await txn.get(b"n") or b"0")
                    await asyncio.sleep(0)
                    await txn.set(b"n", b"%d" % (current + 1))
                return
            except TransactionConflictError:
                continue

    await bounded(asyncio.gather(*(increment_until_committed() for _ in range(20))))
    assert await storage.get(counter, b"n") == b"%d" % (successes + 20)


@pytest.mark.parametrize("group_commit", [True, False])
async def test_transactions_return_their_connection_to_the_pool(
    server: RedisServer, group_commit: bool
) -> None:
    store = open_redis(server.url, max_connections=2, pool_timeout=5.0, group_commit=group_commit)
    try:
        await store.set(ALICE, b"k", b"v")
        for n in range(30):
            txn = store.transaction(ALICE)
            await txn.get(b"k")
            if n % 3 == 0:
                await txn.abort()
            elif n % 3 == 1:
                await txn.commit()  # read-only commit
            else:
                await txn.set(b"k", b"v%d" % n)
                await txn.commit()
        async with store.transaction(ALICE) as txn:
            await txn.get(b"k")
            # a leftover of an earlier transaction on a connection would fail this
            await txn.set(b"k", b"final")
        assert await store.get(ALICE, b"k") == b"final"
    finally:
        await store.close()


@pytest.mark.parametrize("group_commit", [True, False])
async def test_overlapping_reads_of_one_transaction_see_one_snapshot(
    server: RedisServer, group_commit: bool
) -> None:
    store = open_redis(server.url, max_connections=1, pool_timeout=5.0, group_commit=group_commit)
    try:
        async with store.transaction(ALICE) as txn:
            for n in range(10):
                await txn.set(b"k%d" % n, b"v%d" % n)
        for _ in range(3):
            async with store.transaction(ALICE) as txn:
                values = await bounded(
                    asyncio.gather(*(txn.get(b"k%d" % n) for n in range(10)), txn.list_keys())
                )
                await txn.set(b"k0", b"changed")
            assert values[:10] == [b"v%d" % n for n in range(10)]
            assert values[10] == sorted(b"k%d" % n for n in range(10))
            assert await store.get(ALICE, b"k0") == b"changed"
            async with store.transaction(ALICE) as txn:
                await txn.set(b"k0", b"v0")
    finally:
        await store.close()


async def test_abort_leaves_nothing_behind_so_later_transactions_do_not_conflict(
    storage: RedisStorage,
) -> None:
    other = ActorId("bank", "bob")
    await storage.set(ALICE, b"k", b"v")
    txn = storage.transaction(ALICE)
    await txn.get(b"k")
    await txn.abort()
    await storage.set(ALICE, b"k", b"changed")  # would trip anything left armed
    async with storage.transaction(other) as txn2:
        await txn2.get(b"k")
        await txn2.set(b"k", b"bob")
    assert await storage.get(other, b"k") == b"bob"


async def test_a_foreign_key_of_the_wrong_type_fails_the_commit_with_nothing_applied(
    backend: tuple[RedisStorage, aioredis.Redis],
) -> None:
    store, raw_client = backend
    keys = actor_keys("kelpie", ALICE)
    await store.set(ALICE, b"k", b"v")
    await raw_client.delete(keys.index)
    await raw_client.set(keys.index, b"not a sorted set")
    with pytest.raises(CorruptStateError):
        async with store.transaction(ALICE) as txn:
            await txn.set(b"k", b"changed")
            await txn.set(b"new", b"x")
    assert await raw_client.hgetall(keys.data) == {b"k": b"v"}  # the script wrote nothing
    assert await raw_client.get(keys.version) == b"1"

    await raw_client.delete(keys.index)
    await raw_client.set(keys.version, b"not a number")
    with pytest.raises(CorruptStateError):
        await store.set(ALICE, b"k", b"changed")
    with pytest.raises(CorruptStateError):
        async with store.transaction(ALICE) as txn:
            await txn.get(b"k")
    assert await raw_client.hgetall(keys.data) == {b"k": b"v"}


# -- authentication and configuration --------------------------------------------------


async def test_wrong_password_is_a_config_error_that_never_shows_the_password(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "auth", password="right-horse") as srv:
        wrong = "wr0ng-Battery-staple"
        store = open_redis(f"redis://:{wrong}@127.0.0.1:{srv.port}/0")
        assert wrong not in repr(store)
        for attempt in (
            lambda: store.get(ALICE, b"k"),
            lambda: store.set(ALICE, b"k", b"v"),
            lambda: store.list_keys(ALICE),
        ):
            with pytest.raises(ConfigError) as info:
                await bounded(attempt())
            assert wrong not in str(info.value)
            assert "password" in str(info.value)
        await store.close()

        anonymous = open_redis(f"redis://127.0.0.1:{srv.port}/0")
        with pytest.raises(ConfigError):
            await bounded(anonymous.set(ALICE, b"k", b"v"))
        await anonymous.close()

        right = open_redis(srv.url)
        await right.set(ALICE, b"k", b"v")
        assert await right.get(ALICE, b"k") == b"v"
        await right.close()


async def test_unix_socket_url(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "unix", unix_socket=True) as srv:
        store = open_storage(srv.unix_url.replace("db=0", "db=3"))
        try:
            await store.set(ALICE, b"k", b"v")
            assert await store.get(ALICE, b"k") == b"v"
        finally:
            await store.close()
        raw_client = aioredis.Redis.from_url(srv.url.replace("/0", "/3"))
        assert await raw_client.exists(actor_keys("kelpie", ALICE).data) == 1
        await raw_client.aclose()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS-only redis-server on a loopback port with a fresh self-signed certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = RedisServer(tmp_path).port  # only to pick a free port
    process = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", "0",
         "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path),
         "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=1) as raw_sock,
                    context.wrap_socket(raw_sock, server_hostname="127.0.0.1") as tls,
                ):
                    tls.sendall(b"PING\r\n")
                    if tls.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("the TLS redis-server did not start")
                time.sleep(0.05)
        yield port, cert
    finally:
        process.kill()
        process.wait()


async def test_rediss_url_verifies_the_server_and_commits(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    store = open_storage(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}")
    try:
        async with store.transaction(ALICE) as txn:
            assert await txn.get(b"k") is None
            await txn.set(b"k", b"v")
        assert await store.get(ALICE, b"k") == b"v"
        assert await store.list_keys(ALICE) == [b"k"]
    finally:
        await store.close()
    unverified = open_storage(f"rediss://127.0.0.1:{port}/0", ssl_cert_reqs="none")
    try:
        assert await unverified.get(ALICE, b"k") == b"v"
    finally:
        await unverified.close()
    untrusted = open_storage(f"rediss://127.0.0.1:{port}/0")  # system CAs do not know it
    try:
        with pytest.raises(StorageUnavailableError, match="certificate"):
            await bounded(untrusted.get(ALICE, b"k"))
    finally:
        await untrusted.close()


def test_unknown_option_is_a_config_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        open_redis("redis://localhost/0?prefx=a")
    message = str(info.value)
    assert "prefx" in message
    for known in ("prefix", "socket_timeout", "connect_timeout", "max_connections"):
        assert known in message
    with pytest.raises(ConfigError, match="retry"):
        open_redis("redis://localhost/0", retry=True)
    with pytest.raises(ConfigError, match="ssl_cert_reqs"):
        open_redis("redis://localhost/0?ssl_cert_reqs=none")  # TLS options need rediss://


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost/0?prefix=a{b",
        "redis://localhost/0?prefix=",
        "redis://localhost/0?prefix=a%20b",
        "redis://localhost/x",
        "redis://localhost/0/1",
        "redis://localhost/-1",
        "redis:///0",
        "redis://localhost/0?socket_timeout=0",
        "redis://localhost/0?max_connections=0",
        "redis://localhost/0?prefix=a&prefix=b",
        "unix://relative.sock",
        "unix:///tmp/r.sock?db=x",
        "rediss://localhost/0?ssl_cert_reqs=maybe",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_redis(url)


def test_urls_open_without_network_io_and_hide_the_password() -> None:
    secret = "s3cret-pw"
    store = open_storage(f"redis://user:{secret}@203.0.113.1:6390/4?prefix=svc")
    assert isinstance(store, RedisStorage)
    assert secret not in repr(store)
    assert "redis://user:***@203.0.113.1:6390/4" in repr(store)
    assert store.prefix == "svc"
    tls = open_storage("rediss://example.invalid/0", ssl_cert_reqs="none", socket_timeout="1.5")
    assert isinstance(tls, RedisStorage)
    unix = open_storage(f"unix://:{secret}@/run/redis.sock?db=2")
    assert secret not in repr(unix)


async def test_close_is_idempotent_and_later_calls_raise(storage: RedisStorage) -> None:
    await storage.set(ALICE, b"k", b"v")
    await storage.close()
    await storage.close()
    with pytest.raises(StorageClosedError):
        await storage.get(ALICE, b"k")
    with pytest.raises(StorageClosedError):
        storage.transaction(ALICE)
