"""``kelpie copy`` and ``kelpie verify`` across backends, run as a user runs them.

The chain LMDB -> Redis -> SQLite -> LMDB over actors with hostile ids and
binary records, the first and last hop SIGKILLed halfway and resumed, must
end byte-identical: checked by dumping both ends independently (not with the
command's own digest) and by ``kelpie verify``, which must also fail on a
planted difference. (``memory://`` lives in one process, so it cannot be a hop
between processes; it is covered in-process below.)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kelpie import ActorId, Runtime, open_storage
from kelpie.cli import main
from kelpie.storage.lifecycle import iter_actors
from kelpie.storage.protocol import Storage
from kelpie.testing.redis_server import RedisServer
from tests.runtime.actors import BankAccount

REPO = Path(__file__).resolve().parents[1]
ACTORS = 2000

Dump = dict[ActorId, dict[bytes, bytes]]

_HOSTILE = ["ns/with/slash", "a:b", "{tag}", "ünï cödé", "nul\x00ns", "sp ace", "é" * 64, "x"]


def _hostile_actors(rng: random.Random, count: int) -> list[ActorId]:
    actors: set[ActorId] = set()
    while len(actors) < count:
        namespace = rng.choice(_HOSTILE)
        ident = rng.choice(["", "/", ":", "{", "}", "\x00", "\n", "ß", " "]).join(
            str(rng.randrange(10**6)) for _ in range(rng.randint(1, 3))
        )
        actors.add(ActorId(namespace, ident))
    return sorted(actors)


def _run_async(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with(url: str, body: Any) -> Any:
    storage = open_storage(url)
    try:
        return await body(storage)
    finally:
        await storage.close()


def populate(url: str, seed: int) -> None:
    """Binary records on hostile ids, plus a few actors written by the runtime."""
    rng = random.Random(seed)

    async def body(storage: Storage) -> None:
        async def one(actor: ActorId) -> None:
            async with storage.transaction(actor) as txn:
                for _ in range(rng.randint(1, 4)):
                    key = rng.randbytes(rng.randint(1, 256))
                    await txn.set(key, rng.randbytes(rng.choice([0, 1, 17, 300, 2000])))

        actors = _hostile_actors(rng, ACTORS)
        for start in range(0, len(actors), 200):
            await asyncio.gather(*(one(a) for a in actors[start : start + 200]))
        await storage.set(actors[0], b"big", rng.randbytes(1 << 20))
        async with Runtime(storage) as runtime:
            runtime.register("account", BankAccount)
            for n in range(5):
                await runtime.invoke(
                    ActorId("account", f"acct/{n}"), "deposit", {"amount": n}, idempotency_key="i"
                )

    _run_async(_with(url, body))


def dump(url: str) -> Dump:
    """Every record of the store, read with the plain protocol."""

    async def body(storage: Storage) -> Dump:
        result: Dump = {}
        async for actor in iter_actors(storage):
            keys = await storage.list_keys(actor)
            result[actor] = {key: await storage.get(actor, key) or b"" for key in keys}
        return result

    result: Dump = _run_async(_with(url, body))
    return result


def count(url: str) -> int:
    async def body(storage: Storage) -> int:
        return sum([1 async for _ in iter_actors(storage, page=10_000)])

    result: int = _run_async(_with(url, body))
    return result


def kelpie(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "kelpie.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    print(result.stdout[-2000:], result.stderr[-2000:], sep="\n")
    return result


_STOPPED_OK = "connect_timeout=60&socket_timeout=60"
"""Redis timeouts for a copy that ``copy_killed_halfway`` keeps stopping: a connect or
read it had started runs on the clock while it is stopped, and on a loaded machine
the default 2 s ran out (the copy then exits 1: "unavailable ... Timeout connecting")."""


def copy_killed_halfway(source: str, destination: str, errors: Path) -> int:
    """Start ``kelpie copy``, SIGKILL it once a fifth of the actors arrived; return how many.

    The copy's stderr goes to ``errors``: if it ends by itself, the assertion says why.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with errors.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "kelpie.cli", "copy", source, destination],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
    deadline = time.monotonic() + 120
    # Into Redis, count while the copy is stopped: listing a cluster takes a
    # while on a loaded machine, and a copy left running meanwhile once
    # finished all 2,005 actors before the kill. (Not into SQLite or LMDB:
    # opening one to count may wait for a lock the stopped copy holds.)
    pause = destination.startswith("redis")
    try:
        while True:
            if pause:
                process.send_signal(signal.SIGSTOP)
            if count(destination) >= ACTORS // 5:
                break
            assert process.poll() is None, (
                f"the copy ended (exit {process.returncode}) before it could be killed: "
                + errors.read_text(errors="replace")[-2000:]
            )
            assert time.monotonic() < deadline
            if pause:
                process.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    arrived = count(destination)
    assert 0 < arrived < ACTORS, arrived
    return arrived


def resume(source: str, destination: str) -> None:
    result = kelpie("copy", source, destination, "--resume")
    assert result.returncode == 0
    assert "resumed after" in result.stdout
    total = ACTORS + 5
    assert f"verify: {total:,} actors compared: {total:,} identical" in result.stdout


def test_a_copy_chain_killed_and_resumed_ends_byte_identical(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    first = f"lmdb://{tmp_path / 'first'}"
    redis = f"{redis_server.url}?prefix=copy-{uuid.uuid4().hex}&{_STOPPED_OK}"
    sqlite = f"sqlite://{tmp_path / 'third.db'}"
    last = f"lmdb://{tmp_path / 'last'}"
    populate(first, seed)

    copy_killed_halfway(first, redis, tmp_path / "copy-1.err")
    resume(first, redis)
    result = kelpie("copy", redis, sqlite)
    assert result.returncode == 0 and "verify: 2,005 actors compared: 2,005 identical" in (
        result.stdout
    )
    copy_killed_halfway(sqlite, last, tmp_path / "copy-2.err")
    resume(sqlite, last)

    original, copied = dump(first), dump(last)
    assert len(original) == ACTORS + 5
    assert copied == original  # byte for byte, every key of every actor
    result = kelpie("verify", first, last)
    assert result.returncode == 0
    assert "2,005 identical, 0 different, 0 missing" in result.stdout

    # A planted difference: one byte of one value, one actor gone, one extra.
    victim, gone = sorted(original)[7], sorted(original)[8]

    async def plant(storage: Storage) -> None:
        key, value = sorted(original[victim].items())[0]
        await storage.set(victim, key, bytes([value[0] ^ 1]) + value[1:] if value else b"!")
        await storage.delete_actor(gone)
        await storage.set(ActorId("extra", "one"), b"k", b"v")

    _run_async(_with(last, plant))
    result = kelpie("verify", first, last)
    assert result.returncode == 1
    assert "1 different, 1 missing from the destination, 1 only in the destination" in (
        result.stdout
    )
    shown = result.stdout
    assert json.dumps({"namespace": victim.namespace, "id": victim.id}) in shown or (
        f"{victim.namespace}/{victim.id}" in shown
    )


def test_copy_refuses_a_non_empty_destination_unless_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, destination = f"lmdb://{tmp_path / 's'}", f"sqlite://{tmp_path / 'd.db'}"

    async def write(url: str, actor: ActorId, records: dict[bytes, bytes]) -> None:
        async def body(storage: Storage) -> None:
            async with storage.transaction(actor) as txn:
                for key, value in records.items():
                    await txn.set(key, value)

        await _with(url, body)

    a, b = ActorId("ns", "a"), ActorId("other", "b")
    _run_async(write(source, a, {b"k1": b"new", b"k2": b"\x00"}))
    _run_async(write(source, b, {b"x": b"y"}))
    _run_async(write(destination, a, {b"k1": b"old", b"stale": b"gone"}))
    _run_async(write(destination, ActorId("ns", "z"), {b"keep": b"me"}))

    assert main(["copy", source, destination]) == 1
    out, err = capsys.readouterr()
    assert "is not empty" in err and "--merge" in err and err.count("\n") == 1
    assert dump(destination)[a] == {b"k1": b"old", b"stale": b"gone"}  # untouched

    assert main(["copy", source, destination, "--merge", "--namespace", "ns"]) == 0
    out, _ = capsys.readouterr()
    assert "copied 1 actors" in out and "1 actors compared: 1 identical" in out
    copied = dump(destination)
    assert copied[a] == {b"k1": b"new", b"k2": b"\x00"}  # replaced whole: "stale" is gone
    assert copied[ActorId("ns", "z")] == {b"keep": b"me"}  # destination-only actors stay
    assert b not in copied  # outside --namespace
    assert main(["verify", source, destination, "--namespace", "ns"]) == 1  # ns/z is extra
    assert main(["copy", source, source]) == 2


def test_copy_into_memory_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = f"lmdb://{tmp_path / 's'}"
    populate(source, 1)
    name = f"memory://copy-{uuid.uuid4().hex}"
    # memory://NAME lives as long as a storage of it is open in this process.
    keeper = open_storage(name)
    try:
        assert main(["copy", source, name]) == 0
        assert "2,005 identical" in capsys.readouterr().out
        assert dump(name) == dump(source)
        assert main(["verify", name, source]) == 0
        back = f"lmdb://{tmp_path / 'back'}"  # and on: memory -> LMDB
        assert main(["copy", name, back]) == 0
        assert "2,005 identical" in capsys.readouterr().out
        assert dump(back) == dump(source)
    finally:
        _run_async(keeper.close())


def test_a_copy_through_a_redis_cluster_killed_and_resumed(tmp_path: Path) -> None:
    """LMDB -> Redis Cluster (3 masters; SIGKILLed, resumed) -> LMDB, byte-identical."""
    from kelpie.testing.redis_cluster import RedisCluster

    first, last = f"lmdb://{tmp_path / 'first'}", f"lmdb://{tmp_path / 'last'}"
    populate(first, 15)
    with RedisCluster(tmp_path / "cluster", replicas=0) as cluster:
        url = f"{cluster.url}?prefix=copy&{_STOPPED_OK}"
        copy_killed_halfway(first, url, tmp_path / "copy.err")
        resume(first, url)
        result = kelpie("copy", url, last)
        assert result.returncode == 0
    assert dump(last) == dump(first)
