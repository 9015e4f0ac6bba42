"""Storage commit rate beside the raw client, and ``list_keys`` cost against actor size.

    python benchmarks/storage.py [--seconds S] [--backends memory,lmdb,redis]

Per backend, in one table:

- the commit rate of a transaction of 3 writes through kelpie
  (``async with storage.transaction(actor) as t: 3 x await t.set(...)``) beside
  the raw client doing the same 3 writes in the same run: on Redis a
  ``redis.asyncio`` ``MULTI``/``EXEC`` pipeline of 3 ``HSET``s (one round
  trip), on LMDB a py-lmdb write transaction of 3 ``put``s on its own
  environment with the same ``sync`` setting, called directly as a user of
  py-lmdb would; on memory a dict (for information). Target (issue 2): kelpie
  >= 0.8 of raw on Redis and LMDB. On LMDB a second row, for information,
  runs the raw transaction through ``run_in_executor`` on one worker thread,
  as an asyncio program must to keep its loop free during the fsync (kelpie
  commits on a writer thread too): the gap between the two rows is the
  thread hop, the rest is kelpie's own cost.
  A third LMDB row, ``raw in a thread vs raw direct``, compares the raw
  client with itself: the same py-lmdb transaction through a worker thread
  against called directly. It is the ceiling of any design that keeps the
  fsync off the event loop, before any kelpie code runs.
- the same with a read first (get + 3 writes; on Redis raw is
  ``WATCH``/``HGET``/``MULTI``/``EXEC``), for information.
- ``3 writes x 64 actors at once``: 64 actors each commit their 3 writes
  concurrently (one op = all 64, rate = commits/s), beside the raw client
  doing the same 64 transactions concurrently (LMDB: through asyncio's
  default thread pool; Redis: 64 pipelines on pooled connections). Group
  commit (issue 6) lets kelpie share one fsync or round trip among them; for
  information.
- ``list_keys(actor, prefix)`` for a prefix matching 10 keys, in an actor of
  100 keys and in one of 100,000 keys, and the ratio. Target: < 5.

Each pair of figures is measured in interleaved rounds (the order alternating
from round to round) so machine noise hits both alike; a figure is the median
of its rounds and a ratio the median of the per-round ratios. Nothing here is
random. The script starts its own ``redis-server`` on a free loopback port and
keeps everything in a temporary directory (LMDB with ``sync`` on, its
durable default).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kelpie import ActorId, Storage, open_storage

Op = Callable[[], Awaitable[None]]

ROUNDS = 5
VALUE = b"v" * 100  # the value of each benchmark write, 100 bytes
WRITE_KEYS = (b"k0", b"k1", b"k2")
SMALL_ACTOR_KEYS = 100
BIG_ACTOR_KEYS = 100_000
MATCHING_KEYS = 10
LOAD_BATCH = 1_000
LIST_PREFIX = b"m/"
WRITE_TARGET = 0.8
CONCURRENT_ACTORS = 64
LIST_TARGET = 5.0
BACKENDS = ("memory", "lmdb", "redis")


# -- measuring ------------------------------------------------------------------


async def _rate(op: Op, seconds: float) -> float:
    """Calls of ``op`` per second, one at a time, for ``seconds``."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    now = started
    while now < deadline:
        await op()
        done += 1
        now = time.perf_counter()
    return done / (now - started)


@dataclass
class Pair:
    """Medians of interleaved rounds of a reference op and a measured op (calls/s)."""

    reference: float
    measured: float
    ratio: float  # median of per-round measured/reference


async def _interleaved(reference: Op, measured: Op, seconds: float) -> Pair:
    """Alternate ``reference`` and ``measured`` for ``ROUNDS`` rounds of ``seconds / ROUNDS``.

    Even rounds run the reference first, odd rounds the measured op first, so a
    drift in machine speed favours neither.
    """
    for op in (reference, measured):  # warm up: connections, caches, first pages
        await _rate(op, min(0.2, seconds / 10))
    slice_ = seconds / ROUNDS
    refs: list[float] = []
    meas: list[float] = []
    for round_ in range(ROUNDS):
        gc.collect()
        if round_ % 2 == 0:
            refs.append(await _rate(reference, slice_))
            meas.append(await _rate(measured, slice_))
        else:
            meas.append(await _rate(measured, slice_))
            refs.append(await _rate(reference, slice_))
    ratios = [m / r for m, r in zip(meas, refs, strict=True)]
    return Pair(statistics.median(refs), statistics.median(meas), statistics.median(ratios))


# -- kelpie's side ----------------------------------------------------------------


def _kelpie_writes(storage: Storage, actor: ActorId) -> Op:
    async def once() -> None:
        async with storage.transaction(actor) as txn:
            for key in WRITE_KEYS:
                await txn.set(key, VALUE)

    return once


def _kelpie_concurrent(storage: Storage, actors: list[ActorId]) -> Op:
    each = [_kelpie_writes(storage, actor) for actor in actors]

    async def once() -> None:
        await asyncio.gather(*(write() for write in each))

    return once


def _kelpie_rmw(storage: Storage, actor: ActorId) -> Op:
    async def once() -> None:
        async with storage.transaction(actor) as txn:
            await txn.get(WRITE_KEYS[0])
            for key in WRITE_KEYS:
                await txn.set(key, VALUE)

    return once


def _list_keys(storage: Storage, actor: ActorId) -> Op:
    async def once() -> None:
        keys = await storage.list_keys(actor, LIST_PREFIX)
        if len(keys) != MATCHING_KEYS:
            raise AssertionError(f"list_keys returned {len(keys)} keys, not {MATCHING_KEYS}")

    return once


def _actor_keys(total: int) -> list[bytes]:
    """``total`` keys, sorted, ``MATCHING_KEYS`` of them under ``LIST_PREFIX`` in the middle."""
    others = total - MATCHING_KEYS
    below = [b"a/%06d" % i for i in range(others // 2)]
    matching = [LIST_PREFIX + b"%02d" % i for i in range(MATCHING_KEYS)]
    above = [b"z/%06d" % i for i in range(others - others // 2)]
    return below + matching + above


async def _load(storage: Storage, actor: ActorId, total: int) -> float:
    """Write ``total`` keys to ``actor`` in transactions of ``LOAD_BATCH``; return seconds."""
    keys = _actor_keys(total)
    started = time.perf_counter()
    for start in range(0, total, LOAD_BATCH):
        async with storage.transaction(actor) as txn:
            for key in keys[start : start + LOAD_BATCH]:
                await txn.set(key, b"x")
    return time.perf_counter() - started


# -- raw clients --------------------------------------------------------------------


@dataclass
class Raw:
    """The raw client's versions of the two transactions, and how to clean up."""

    name: str
    writes: Op
    rmw: Op
    close: Callable[[], Awaitable[None]]
    threaded_writes: Op | None = None  # the same writes through a worker thread, if relevant
    concurrent_writes: Op | None = None  # CONCURRENT_ACTORS raw transactions at once


def _raw_dict() -> Raw:
    data: dict[bytes, bytes] = {}

    async def writes() -> None:
        for key in WRITE_KEYS:
            data[key] = VALUE

    async def rmw() -> None:
        data.get(WRITE_KEYS[0])
        for key in WRITE_KEYS:
            data[key] = VALUE

    async def close() -> None:
        data.clear()

    async def concurrent() -> None:
        await asyncio.gather(*(writes() for _ in range(CONCURRENT_ACTORS)))

    return Raw("dict", writes, rmw, close, concurrent_writes=concurrent)


def _raw_lmdb(directory: Path) -> Raw:
    import lmdb

    # py-lmdb's defaults are the durable ones (sync=True, metasync=True), as are kelpie's.
    env: Any = lmdb.open(str(directory), map_size=64 << 20, sync=True)
    writer = ThreadPoolExecutor(1)

    def write_sync() -> None:
        with env.begin(write=True) as txn:
            for key in WRITE_KEYS:
                txn.put(key, VALUE)

    async def writes() -> None:
        write_sync()

    async def threaded_writes() -> None:
        # What an asyncio program must do to keep the loop free during the fsync.
        await asyncio.get_running_loop().run_in_executor(writer, write_sync)

    async def rmw() -> None:
        with env.begin(write=True) as txn:
            txn.get(WRITE_KEYS[0])
            for key in WRITE_KEYS:
                txn.put(key, VALUE)

    async def concurrent() -> None:
        await asyncio.gather(*(asyncio.to_thread(write_sync) for _ in range(CONCURRENT_ACTORS)))

    async def close() -> None:
        writer.shutdown()
        env.close()

    return Raw("py-lmdb write txn", writes, rmw, close, threaded_writes, concurrent)


def _raw_redis(url: str) -> Raw:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    data = b"bench-raw:{actor}:d"

    async def writes() -> None:
        async with client.pipeline(transaction=True) as pipe:
            for key in WRITE_KEYS:
                pipe.hset(data, key, VALUE)
            await pipe.execute()

    async def rmw() -> None:
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch(data)
            await pipe.hget(data, WRITE_KEYS[0])
            pipe.multi()  # type: ignore[no-untyped-call]
            for key in WRITE_KEYS:
                pipe.hset(data, key, VALUE)
            await pipe.execute()

    async def concurrent() -> None:
        await asyncio.gather(*(writes() for _ in range(CONCURRENT_ACTORS)))

    async def close() -> None:
        await client.aclose()

    return Raw("redis-py MULTI/EXEC", writes, rmw, close, concurrent_writes=concurrent)


# -- one backend --------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    writes: Pair
    threaded: Pair | None  # kelpie against the raw writes run in a worker thread
    ceiling: Pair | None  # the raw writes in a worker thread against raw direct
    rmw: Pair
    concurrent: Pair | None  # CONCURRENT_ACTORS commits at once, kelpie against raw
    lists: Pair  # reference: the small actor, measured: the big one (calls/s)
    load_seconds: float


async def bench(backend: str, url: str, raw: Raw, seconds: float) -> Result:
    storage = open_storage(url)
    try:
        writer = ActorId("bench", "writes")
        writes = await _interleaved(raw.writes, _kelpie_writes(storage, writer), seconds)
        threaded = ceiling = concurrent = None
        if raw.threaded_writes is not None:
            threaded = await _interleaved(
                raw.threaded_writes, _kelpie_writes(storage, writer), seconds
            )
            ceiling = await _interleaved(raw.writes, raw.threaded_writes, seconds)
        rmw = await _interleaved(raw.rmw, _kelpie_rmw(storage, writer), seconds)
        if raw.concurrent_writes is not None:
            many = [ActorId("bench", f"many-{i}") for i in range(CONCURRENT_ACTORS)]
            concurrent = await _interleaved(
                raw.concurrent_writes, _kelpie_concurrent(storage, many), seconds
            )
        small, big = ActorId("bench", "small"), ActorId("bench", "big")
        await _load(storage, small, SMALL_ACTOR_KEYS)
        load_seconds = await _load(storage, big, BIG_ACTOR_KEYS)
        lists = await _interleaved(
            _list_keys(storage, small), _list_keys(storage, big), seconds / 2
        )
    finally:
        try:
            await storage.close()
        finally:
            await raw.close()
    return Result(backend, writes, threaded, ceiling, rmw, concurrent, lists, load_seconds)


# -- reporting ----------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _row(backend: str, what: str, pair: Pair, target: str) -> tuple[str, ...]:
    return (
        backend, what, f"{pair.reference:,.0f}", f"{pair.measured:,.0f}", f"{pair.ratio:.2f}",
        target,
    )  # fmt: skip


def _rows(result: Result) -> list[tuple[str, ...]]:
    b, w, ls = result.backend, result.writes, result.lists
    if b == "memory":
        write_target = "(info)"
    else:
        write_target = f">= {WRITE_TARGET:.1f} {_verdict(w.ratio >= WRITE_TARGET)}"
    rows = [_row(b, "3 writes, commits/s", w, write_target)]
    if result.threaded is not None:
        rows.append(_row(b, "3 writes, raw in a thread, commits/s", result.threaded, "(info)"))
    if result.ceiling is not None:
        rows.append(_row(b, "raw in a thread vs raw direct", result.ceiling, "(ceiling)"))
    rows.append(_row(b, "get + 3 writes, commits/s", result.rmw, "(info)"))
    if result.concurrent is not None:
        pair = result.concurrent
        n = CONCURRENT_ACTORS
        scaled = Pair(pair.reference * n, pair.measured * n, pair.ratio)
        rows.append(_row(b, f"3 writes x {n} actors at once, commits/s", scaled, "(info)"))
    # time(big) / time(small): the inverse of the median per-round ratio of rates
    list_ratio = 1.0 / ls.ratio
    rows.append(
        (b, "list_keys -> 10 keys, us", f"{1e6 / ls.reference:,.1f}",
         f"{1e6 / ls.measured:,.1f}", f"{list_ratio:.2f}",
         f"< {LIST_TARGET:.0f} {_verdict(list_ratio < LIST_TARGET)}")
    )  # fmt: skip
    return rows


def _print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("backend", "measurement", "raw | 100 keys", "kelpie | 100k keys", "ratio", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            cell.ljust(width) if i in (0, 1, 5) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), flush=True)


def _redis_version() -> str:
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return next((p[2:] for p in out.split() if p.startswith("v=")), "?")


def _print_parameters(args: argparse.Namespace, backends: list[str], tmp: Path) -> None:
    import lmdb
    import redis

    print(
        f"kelpie storage benchmark; no randomness (no seed). python {platform.python_version()}, "
        f"redis-py {redis.__version__}, py-lmdb {lmdb.__version__}, "
        f"redis-server {_redis_version()}"
    )
    print(
        f"backends {','.join(backends)}; {args.seconds:g} s per commit figure, "
        f"{args.seconds / 2:g} s per list_keys figure, each split into {ROUNDS} interleaved "
        f"rounds (median); values {len(VALUE)} bytes; temp dir {tmp}"
    )
    print(
        "raw = for commits, the raw client doing the same 3 writes: memory a dict; lmdb a "
        "py-lmdb write txn on its own env, sync on, called directly (and, in the 'raw in a "
        "thread' row, via run_in_executor); redis a redis-py MULTI/EXEC pipeline of 3 HSETs "
        "(1 round trip)"
    )
    print(
        f"list_keys: the prefix matches {MATCHING_KEYS} keys of an actor of "
        f"{SMALL_ACTOR_KEYS} keys ('raw | 100 keys' column) and of one of "
        f"{BIG_ACTOR_KEYS:,} keys ('kelpie | 100k keys' column)"
    )
    print("ratio = median of per-round kelpie/raw (list_keys: time 100k / time 100)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="per commit figure, each side (default 5)"
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        parser.error("--seconds must be positive")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")

    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kelpie-bench-")))
        _print_parameters(args, backends, tmp)
        for backend in backends:
            if backend == "memory":
                url, raw = "memory://", _raw_dict()
            elif backend == "lmdb":
                (tmp / "lmdb-raw").mkdir()
                url, raw = f"lmdb://{tmp}/lmdb", _raw_lmdb(tmp / "lmdb-raw")  # sync: default on
            else:
                from kelpie.testing.redis_server import RedisServer

                server = RedisServer(tmp / "redis")
                server.start()
                stack.callback(server.stop)
                url, raw = server.url + "?prefix=bench", _raw_redis(server.url)
            result = asyncio.run(bench(backend, url, raw, args.seconds))
            rows += _rows(result)
            notes.append(
                f"{backend}: loaded {BIG_ACTOR_KEYS:,} keys in {result.load_seconds:.1f} s "
                f"({LOAD_BATCH:,} writes per transaction)"
            )
    print()
    _print_table(rows)
    print()
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
