"""Enumerating actors with ``list_actors`` against reading as many keys with the raw client.

    python benchmarks/list_actors.py [--actors 100000] [--rounds 3] [--backends memory,lmdb,...]

Issue 15's target: enumerating 100,000 actors (``kelpie.storage.lifecycle.
iter_actors``, pages of 1,000, i.e. ``list_actors(after=last)`` page by page)
costs at most 3x reading 100,000 keys with the backend's own client in the
same run. Per backend, the store holds N actors of one small key each
(written through ``Storage``); the raw baseline holds N keys of the same size
written with the raw client, and reads all of them back (keys *and* values)
in the cheapest natural way, in pages of 1,000 where the client pages:

- memory: iterating a dict of N ``bytes -> bytes``.
- LMDB: one py-lmdb read transaction, a cursor over N entries (sync on).
- Redis: ``MGET`` of 1,000 known keys at a time, on redis.asyncio.
- SQLite: ``SELECT k, v ... WHERE k > ? ORDER BY k LIMIT 1000`` pages, sqlite3.

Rounds alternate kelpie and raw; the median time of each is printed with the
ratio kelpie / raw. The script starts its own ``redis-server`` on a free
loopback port and keeps everything in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kelpie import ActorId, Storage, open_storage
from kelpie.storage.lifecycle import iter_actors

BACKENDS = ("memory", "lmdb", "redis", "sqlite")
PAGE = 1000
VALUE = b"v" * 16


def _actor(n: int) -> ActorId:
    return ActorId("bench-list", f"actor-{n:08d}")


async def _fill(storage: Storage, actors: int) -> None:
    async def one(n: int) -> None:
        await storage.set(_actor(n), b"k", VALUE)

    for start in range(0, actors, 2000):
        await asyncio.gather(*(one(n) for n in range(start, min(start + 2000, actors))))


async def _enumerate(storage: Storage) -> int:
    return sum([1 async for _ in iter_actors(storage, page=PAGE)])


Reader = Callable[[], Awaitable[int]]


async def _memory_raw(actors: int) -> tuple[Reader, Callable[[], Awaitable[None]]]:
    data = {b"actor-%08d" % n: VALUE for n in range(actors)}

    async def read() -> int:
        return sum(1 for _key, _value in data.items())

    async def close() -> None:
        data.clear()

    return read, close


async def _lmdb_raw(actors: int, directory: Path) -> tuple[Reader, Callable[[], Awaitable[None]]]:
    import lmdb

    env = lmdb.open(str(directory / "raw-lmdb"), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for n in range(actors):
            txn.put(b"actor-%08d" % n, VALUE)

    async def read() -> int:
        with env.begin() as txn:
            return sum(1 for _key, _value in txn.cursor())

    async def close() -> None:
        env.close()

    return read, close


async def _redis_raw(actors: int, url: str) -> tuple[Reader, Callable[[], Awaitable[None]]]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    keys = [b"raw-list:%08d" % n for n in range(actors)]
    for start in range(0, actors, PAGE):
        await client.mset(dict.fromkeys(keys[start : start + PAGE], VALUE))

    async def read() -> int:
        count = 0
        for start in range(0, actors, PAGE):
            count += len(await client.mget(keys[start : start + PAGE]))
        return count

    async def close() -> None:
        await client.delete(*keys[:1])
        await client.aclose()

    return read, close


async def _sqlite_raw(actors: int, directory: Path) -> tuple[Reader, Callable[[], Awaitable[None]]]:
    db = sqlite3.connect(directory / "raw.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
    with db:
        db.executemany(
            "INSERT INTO t VALUES (?, ?)", ((b"a%08d" % n, VALUE) for n in range(actors))
        )

    async def read() -> int:
        count, after = 0, b""
        while True:
            rows = db.execute(
                "SELECT k, v FROM t WHERE k > ? ORDER BY k LIMIT ?", (after, PAGE)
            ).fetchall()
            count += len(rows)
            if len(rows) < PAGE:
                return count
            after = rows[-1][0]

    async def close() -> None:
        db.close()

    return read, close


async def _timed(read: Reader, expected: int) -> float:
    started = time.perf_counter()
    count = await read()
    seconds = time.perf_counter() - started
    if count != expected:
        raise AssertionError(f"read {count} entries, expected {expected}")
    return seconds


async def measure(backend: str, url: str, actors: int, rounds: int, directory: Path) -> str:
    storage = open_storage(url)
    try:
        started = time.perf_counter()
        await _fill(storage, actors)
        filled = time.perf_counter() - started
        if backend == "memory":
            raw, close = await _memory_raw(actors)
        elif backend == "lmdb":
            raw, close = await _lmdb_raw(actors, directory)
        elif backend == "redis":
            raw, close = await _redis_raw(actors, url.split("?")[0])
        else:
            raw, close = await _sqlite_raw(actors, directory)
        try:
            ours: list[float] = []
            theirs: list[float] = []
            for _ in range(rounds):
                ours.append(await _timed(lambda: _enumerate(storage), actors))
                theirs.append(await _timed(raw, actors))
        finally:
            await close()
    finally:
        await storage.close()
    kelpie_s, raw_s = statistics.median(ours), statistics.median(theirs)
    return (
        f"{backend:<8} {actors:>9,} {kelpie_s * 1000:>11.1f} {raw_s * 1000:>9.1f} "
        f"{kelpie_s / raw_s:>6.2f}x {actors / kelpie_s:>13,.0f}   (filled in {filled:.1f} s)"
    )


async def main_async(backends: list[str], actors: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="kelpie-list-bench-") as temp:
        directory = Path(temp)
        server = None
        header = ("backend", "actors", "list ms", "raw ms", "ratio", "actors/s")
        print("{:<8} {:>9} {:>11} {:>9} {:>7} {:>13}".format(*header))
        try:
            for backend in backends:
                if backend == "memory":
                    url = "memory://"
                elif backend == "lmdb":
                    url = f"lmdb://{directory / 'kelpie-lmdb'}"
                elif backend == "sqlite":
                    url = f"sqlite://{directory / 'kelpie.db'}"
                else:
                    from kelpie.testing.redis_server import RedisServer

                    server = RedisServer(directory / "redis")
                    server.start()
                    url = f"{server.url}?prefix=list-bench"
                print(await measure(backend, url, actors, rounds, directory), flush=True)
        finally:
            if server is not None:
                server.stop()
    print("ratio = list_actors time / raw read time (issue 15 target: at most 3x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actors", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    backends = [name for name in args.backends.split(",") if name]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; known: {', '.join(BACKENDS)}")
    asyncio.run(main_async(backends, args.actors, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
