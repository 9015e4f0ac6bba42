"""Invocations per second through the runtime, beside the raw storage transaction rate.

    python benchmarks/runtime.py [--seconds S] [--backends memory,lmdb,redis]

One invocation changes the state and does one ``kv_set``; its commit is one
storage transaction that reads the state record and writes it and the KV key.
The raw figure runs exactly that transaction straight on the storage, in the
same run, so the ratio is the runtime's own cost. Each figure is measured
sequentially (one actor, one call at a time) and with 64 actors invoked
concurrently; raw and runtime slices alternate so machine noise hits both.
Targets (issue 3): sequential >= 0.7 of raw on Redis and LMDB, and >= 20,000
invocations/s on memory.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kelpie import Actor, ActorContext, ActorId, Runtime, Storage, open_storage
from kelpie.actor.codec import JsonCodec, StateRecord
from kelpie.actor.keys import STATE_KEY, user_key
from kelpie.errors import ConfigError

CONCURRENCY = 64
SLICES = 3  # raw and runtime alternate this many times per figure


@dataclass
class Counter:
    n: int = 0


class CounterActor(Actor[Counter]):
    state_type = Counter

    async def bump(self, ctx: ActorContext[Counter], payload: None) -> int:
        ctx.state.n += 1
        await ctx.kv_set(b"counter", str(ctx.state.n).encode())
        return ctx.state.n


def _raw_txn(storage: Storage, actor: ActorId) -> Callable[[], Awaitable[None]]:
    """The transaction one ``bump`` commits: read the state, write it and the KV key."""
    codec = JsonCodec()
    kv_key = user_key(b"counter")
    n = 0

    async def once() -> None:
        nonlocal n
        n += 1
        async with storage.transaction(actor) as txn:
            await txn.get(STATE_KEY)
            record = StateRecord(n, 0, codec.name, codec.encode(Counter(n)))
            await txn.set(kv_key, str(n).encode())
            await txn.set(STATE_KEY, record.encode())

    return once


def _invoke(runtime: Runtime, actor: ActorId) -> Callable[[], Awaitable[None]]:
    async def once() -> None:
        await runtime.invoke(actor, "bump")

    return once


async def _measure(calls: list[Callable[[], Awaitable[None]]], seconds: float) -> tuple[int, float]:
    """Run every call in its own loop for ``seconds``; return (calls done, elapsed)."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop(call: Callable[[], Awaitable[None]]) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(call) for call in calls))
    return done, time.perf_counter() - started


@dataclass
class Figure:
    raw: float
    runtime: float

    @property
    def ratio(self) -> float:
        return self.runtime / self.raw if self.raw else 0.0


async def _compare(
    raw: list[Callable[[], Awaitable[None]]],
    invoke: list[Callable[[], Awaitable[None]]],
    seconds: float,
) -> Figure:
    done = {"raw": 0, "runtime": 0}
    spent = {"raw": 0.0, "runtime": 0.0}
    for _ in range(SLICES):
        for name, calls in (("raw", raw), ("runtime", invoke)):
            n, elapsed = await _measure(calls, seconds / SLICES)
            done[name] += n
            spent[name] += elapsed
    return Figure(done["raw"] / spent["raw"], done["runtime"] / spent["runtime"])


async def bench(url: str, seconds: float) -> tuple[Figure, Figure]:
    """(sequential, concurrent) figures for the storage at ``url``."""
    storage = open_storage(url)
    try:
        runtime = Runtime(storage)
        runtime.register("bench", CounterActor)
        actors = [ActorId("bench", f"a{i}") for i in range(CONCURRENCY)]
        raw_actors = [ActorId("bench-raw", f"a{i}") for i in range(CONCURRENCY)]
        try:
            for actor in actors:  # activate (load) outside the measurement
                await runtime.invoke(actor, "bump")
            sequential = await _compare(
                [_raw_txn(storage, raw_actors[0])], [_invoke(runtime, actors[0])], seconds
            )
            concurrent = await _compare(
                [_raw_txn(storage, a) for a in raw_actors],
                [_invoke(runtime, a) for a in actors],
                seconds,
            )
        finally:
            await runtime.close()
    finally:
        await storage.close()
    return sequential, concurrent


def _target(backend: str, fig: Figure) -> str:
    """The issue's target for a sequential figure, and whether it was met."""
    if backend == "memory":
        return f"target >= 20,000/s: {'met' if fig.runtime >= 20_000 else 'MISSED'}"
    return f"target ratio >= 0.70: {'met' if fig.ratio >= 0.7 else 'MISSED'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure (default 3)")
    parser.add_argument("--backends", default="memory,lmdb,redis", help="comma-separated")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"memory", "lmdb", "redis"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")

    print(f"invocations/s, one state change + one kv_set each; {args.seconds:g} s per figure")
    print(f"{'backend':<8} {'mode':<14} {'raw txn/s':>10} {'runtime/s':>10} {'ratio':>6}  target")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kelpie-bench-")))
        for backend in backends:
            if backend == "memory":
                url = "memory://"
            elif backend == "lmdb":
                url = f"lmdb://{tmp}/lmdb"  # sync is on by default
            else:
                try:
                    from kelpie.testing.redis_server import RedisServer
                except ImportError:
                    print("redis    skipped: kelpie.testing.redis_server is not available")
                    continue
                server = RedisServer(tmp / "redis")
                (tmp / "redis").mkdir()
                server.start()
                stack.callback(server.stop)
                url = server.url
            try:
                sequential, concurrent = asyncio.run(bench(url, args.seconds))
            except ConfigError as exc:  # e.g. a backend module that is not installed
                print(f"{backend:<8} skipped: {exc}")
                continue
            for mode, fig in (("sequential", sequential), (f"{CONCURRENCY} actors", concurrent)):
                target = _target(backend, fig) if mode == "sequential" else ""
                line = (
                    f"{backend:<8} {mode:<14} {fig.raw:>10,.0f} {fig.runtime:>10,.0f} "
                    f"{fig.ratio:>6.2f}  {target}"
                )
                print(line.rstrip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
