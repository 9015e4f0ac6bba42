"""Enumerating actors with ``list_actors`` against reading as many keys with the raw client.

    python benchmarks/list_actors.py [--actors 100000] [--rounds 5] [--backends memory,lmdb,...]

Issue 15's target: enumerating 100,000 actors costs at most 3x reading 100,000
keys with the backend's own client in the same run. Enumerating is what the
protocol offers and a user runs: ``list_actors(after=last, limit=1000)``
page by page until a short page. Per backend the store holds N actors of one
small key each (written through ``Storage``); the raw client's store holds N
keys of the same size, and two baselines read all of them (keys *and*
values), in pages of 1,000 where the client pages:

``read`` -- reading N known keys, the target's baseline:

- memory: ``dict`` lookups (``map(data.__getitem__, page)``).
- LMDB: ``txn.get`` of each key, one read transaction per page (sync on).
- Redis: ``MGET`` of 1,000 keys, on redis.asyncio.
- SQLite: ``SELECT k, v FROM t WHERE k IN (...1,000 keys)``, sqlite3.
- PostgreSQL: ``SELECT k, v FROM t WHERE k = ANY($1)`` (1,000 keys), asyncpg.

``scan`` -- walking the raw store in key order, the cheapest read there is
(a stricter bound than the target asks):

- memory: iterating the dict's items.
- LMDB: one read transaction, a cursor over all N entries.
- Redis: ``ZRANGEBYLEX`` pages of a sorted set of N members (the command a
  listing runs, without kelpie's decoding).
- SQLite and PostgreSQL: ``SELECT k, v ... WHERE k > ? ORDER BY k LIMIT
  1000`` pages.

Rounds alternate kelpie and the two baselines; the medians are printed with
the ratios kelpie / read and kelpie / scan. The script starts its own
``redis-server`` (and PostgreSQL server, when ``initdb`` is installed) on a
free loopback port and keeps everything in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kelpie import ActorId, Storage, open_storage

BACKENDS = ("memory", "lmdb", "redis", "sqlite", "postgres")
PAGE = 1000
VALUE = b"v" * 16

Reader = Callable[[], Awaitable[int]]


@dataclass
class Raw:
    """The raw client's two ways of reading the N keys back, and how to close it."""

    read: Reader
    scan: Reader
    close: Callable[[], Awaitable[None]]


def _actor(n: int) -> ActorId:
    return ActorId("bench-list", f"actor-{n:08d}")


def _keys(actors: int) -> list[bytes]:
    return [b"actor-%08d" % n for n in range(actors)]


def _pages(keys: list[bytes]) -> list[list[bytes]]:
    return [keys[start : start + PAGE] for start in range(0, len(keys), PAGE)]


async def _fill(storage: Storage, actors: int) -> None:
    async def one(n: int) -> None:
        await storage.set(_actor(n), b"k", VALUE)

    for start in range(0, actors, 2000):
        await asyncio.gather(*(one(n) for n in range(start, min(start + 2000, actors))))


async def _enumerate(storage: Storage) -> int:
    """Every actor, page by page, as a user of the protocol lists them."""
    count, after = 0, None
    while True:
        page = await storage.list_actors(after=after, limit=PAGE)
        count += len(page)
        if len(page) < PAGE:
            return count
        after = page[-1]


async def _memory_raw(actors: int) -> Raw:
    data = dict.fromkeys(_keys(actors), VALUE)
    pages = _pages(list(data))

    async def read() -> int:
        return sum(len(list(map(data.__getitem__, page))) for page in pages)

    async def scan() -> int:
        return sum(1 for _key, _value in data.items())

    async def close() -> None:
        data.clear()

    return Raw(read, scan, close)


async def _lmdb_raw(actors: int, directory: Path) -> Raw:
    import lmdb

    env = lmdb.open(str(directory / "raw-lmdb"), map_size=1 << 30)
    keys = _keys(actors)
    with env.begin(write=True) as txn:
        for key in keys:
            txn.put(key, VALUE)
    pages = _pages(keys)

    async def read() -> int:
        count = 0
        for page in pages:
            with env.begin() as txn:
                count += len(list(map(txn.get, page)))
        return count

    async def scan() -> int:
        with env.begin() as txn:
            return sum(1 for _key, _value in txn.cursor())

    async def close() -> None:
        env.close()

    return Raw(read, scan, close)


async def _redis_raw(actors: int, url: str) -> Raw:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    keys = [b"raw-list:" + key for key in _keys(actors)]
    pages = _pages(keys)
    for page in pages:
        await client.mset(dict.fromkeys(page, VALUE))
        await client.zadd("raw-list-index", dict.fromkeys(page, 0))

    async def read() -> int:
        return sum([len(await client.mget(page)) for page in pages])

    async def scan() -> int:
        count, low = 0, b"-"
        while True:
            members = await client.zrangebylex("raw-list-index", low, b"+", start=0, num=PAGE)
            count += len(members)
            if len(members) < PAGE:
                return count
            last = members[-1]
            low = b"(" + (last if isinstance(last, bytes) else last.encode())

    async def close() -> None:
        for page in pages:
            await client.delete(*page)
        await client.delete("raw-list-index")
        await client.aclose()

    return Raw(read, scan, close)


async def _sqlite_raw(actors: int, directory: Path) -> Raw:
    db = sqlite3.connect(directory / "raw.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
    keys = _keys(actors)
    with db:
        db.executemany("INSERT INTO t VALUES (?, ?)", ((key, VALUE) for key in keys))
    pages = _pages(keys)
    by_keys = "SELECT k, v FROM t WHERE k IN ({})".format(",".join("?" * PAGE))

    async def read() -> int:
        count = 0
        for page in pages:
            query = by_keys if len(page) == PAGE else by_keys.replace("?,", "", PAGE - len(page))
            count += len(db.execute(query, page).fetchall())
        return count

    async def scan() -> int:
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

    return Raw(read, scan, close)


async def _postgres_raw(actors: int, url: str) -> Raw:
    import asyncpg

    connection = await asyncpg.connect(url.split("?")[0])
    await connection.execute("CREATE TABLE raw_list (k bytea PRIMARY KEY, v bytea NOT NULL)")
    keys = _keys(actors)
    await connection.copy_records_to_table("raw_list", records=[(key, VALUE) for key in keys])
    await connection.execute("ANALYZE raw_list")
    pages = _pages(keys)

    async def read() -> int:
        count = 0
        for page in pages:
            count += len(
                await connection.fetch("SELECT k, v FROM raw_list WHERE k = ANY($1)", page)
            )
        return count

    async def scan() -> int:
        count, after = 0, b""
        while True:
            rows = await connection.fetch(
                "SELECT k, v FROM raw_list WHERE k > $1 ORDER BY k LIMIT $2", after, PAGE
            )
            count += len(rows)
            if len(rows) < PAGE:
                return count
            after = rows[-1]["k"]

    async def close() -> None:
        await connection.execute("DROP TABLE raw_list")
        await connection.close()

    return Raw(read, scan, close)


async def _timed(read: Reader, expected: int) -> float:
    started = time.perf_counter()
    count = await read()
    seconds = time.perf_counter() - started
    if count != expected:
        raise AssertionError(f"read {count} entries, expected {expected}")
    return seconds


async def _raw_for(backend: str, url: str, actors: int, directory: Path) -> Raw:
    if backend == "memory":
        return await _memory_raw(actors)
    if backend == "lmdb":
        return await _lmdb_raw(actors, directory)
    if backend == "redis":
        return await _redis_raw(actors, url.split("?")[0])
    if backend == "postgres":
        return await _postgres_raw(actors, url)
    return await _sqlite_raw(actors, directory)


async def measure(backend: str, url: str, actors: int, rounds: int, directory: Path) -> str:
    gc.collect()  # nothing left of the previous backend's run to slow this one's collections
    storage = open_storage(url)
    try:
        started = time.perf_counter()
        await _fill(storage, actors)
        filled = time.perf_counter() - started
        raw = await _raw_for(backend, url, actors, directory)
        try:
            ours: list[float] = []
            reads: list[float] = []
            scans: list[float] = []
            for _ in range(rounds):
                ours.append(await _timed(lambda: _enumerate(storage), actors))
                reads.append(await _timed(raw.read, actors))
                scans.append(await _timed(raw.scan, actors))
        finally:
            await raw.close()
    finally:
        await storage.close()
    kelpie_s = statistics.median(ours)
    read_s, scan_s = statistics.median(reads), statistics.median(scans)
    return (
        f"{backend:<8} {actors:>9,} {kelpie_s * 1000:>9.1f} {read_s * 1000:>9.1f} "
        f"{scan_s * 1000:>9.1f} {kelpie_s / read_s:>6.2f}x {kelpie_s / scan_s:>6.2f}x "
        f"{actors / kelpie_s:>12,.0f}   (filled in {filled:.1f} s)"
    )


async def main_async(backends: list[str], actors: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="kelpie-list-bench-") as temp:
        directory = Path(temp)
        header = ("backend", "actors", "list ms", "read ms", "scan ms", "/read", "/scan")
        print("{:<8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>12}".format(*header, "actors/s"))
        for backend in backends:
            if backend == "redis":
                print(await _measure_redis(actors, rounds, directory), flush=True)
                continue
            if backend == "postgres":
                print(await _measure_postgres(actors, rounds, directory), flush=True)
                continue
            if backend == "memory":
                url = "memory://"
            elif backend == "lmdb":
                url = f"lmdb://{directory / 'kelpie-lmdb'}"
            else:
                url = f"sqlite://{directory / 'kelpie.db'}"
            print(await measure(backend, url, actors, rounds, directory), flush=True)
    print(
        "/read = list time / reading as many known keys with the raw client "
        "(issue 15 target: at most 3x); /scan = list time / a raw scan in key order"
    )


async def _measure_redis(actors: int, rounds: int, directory: Path) -> str:
    """The Redis row, on a private ``redis-server`` stopped before the next backend runs."""
    from kelpie.testing.redis_server import RedisServer

    server = RedisServer(directory / "redis")
    server.start()
    try:
        return await measure("redis", f"{server.url}?prefix=list-bench", actors, rounds, directory)
    finally:
        server.stop()


async def _measure_postgres(actors: int, rounds: int, directory: Path) -> str:
    """The PostgreSQL row, on a private server (left out if PostgreSQL is not installed)."""
    from kelpie.testing.postgres_server import PostgresServer, missing_postgres

    missing = missing_postgres()
    if missing is not None:
        return f"postgres (left out: {missing})"
    with PostgresServer() as server:
        return await measure("postgres", server.url(), actors, rounds, directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actors", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
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
