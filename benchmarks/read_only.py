"""What validating read-only invocations costs, per backend.

    python benchmarks/read_only.py [--seconds S] [--backends memory,lmdb,redis]

A read-only invocation that reads KV after its state (``peek``: state, then
``kv_get``) is validated at its end (issue 13, guarantee 5): ``commit()`` of a
transaction that only read checks the actor's version once more -- a dict
lookup on memory, a read transaction on LMDB, one ``GET`` round trip on
Redis. An invocation that reads only its state needs no check (the fence read
is its one version) and is shown for reference.

Rows, each measured in interleaved rounds beside its baseline in the same
process (the median of per-round ratios is printed):

- ``peek, validated / unvalidated``: the same invocation with the check
  switched off (the backend's ``_validate`` replaced by a no-op for the
  baseline rounds -- the behaviour before the fix), one actor at a time and
  64 actors at once.
- ``peek / state-only``: the validated peek against an invocation that reads
  only its state (no KV read, no check), for information.

Machine noise hits both sides alike; nothing here is random. The script
starts its own ``redis-server`` on a free loopback port and keeps everything
in a temporary directory (LMDB with ``sync`` on).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kelpie import Actor, ActorContext, ActorId, Runtime, Storage, open_storage
from kelpie.storage.base import BufferedTransaction

ROUNDS = 7
CONCURRENCY = (1, 64)
BACKENDS = ("memory", "lmdb", "redis")


@dataclass
class Counter:
    n: int = 0


class Peeker(Actor[Counter]):
    state_type = Counter

    async def write(self, ctx: ActorContext[Counter], payload: None) -> None:
        ctx.state.n += 1
        await ctx.kv_set(b"n", b"%d" % ctx.state.n)

    async def peek(self, ctx: ActorContext[Counter], payload: None) -> list[int]:
        raw = await ctx.kv_get(b"n")
        return [ctx.state.n, -1 if raw is None else int(raw)]

    async def state_only(self, ctx: ActorContext[Counter], payload: None) -> int:
        return ctx.state.n


async def _no_check(self: BufferedTransaction) -> None:
    return None


@contextmanager
def validation_off(storage: Storage) -> Iterator[None]:
    """Replace the backend's read-only check by a no-op (the baseline rounds)."""
    cls = type(storage.transaction(ActorId("bench", "probe")))
    original = cls.__dict__.get("_validate")
    setattr(cls, "_validate", _no_check)  # noqa: B010 - a class attribute, swapped back below
    try:
        yield
    finally:
        if original is None:
            delattr(cls, "_validate")
        else:
            setattr(cls, "_validate", original)  # noqa: B010


async def _rate(runtime: Runtime, operation: str, concurrency: int, seconds: float) -> float:
    actors = [ActorId("bench", f"a{i}") for i in range(concurrency)]
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        await asyncio.gather(*(runtime.invoke(a, operation) for a in actors))
        done += concurrency
    return done / (time.perf_counter() - started)


async def _measure(
    storage: Storage, concurrency: int, seconds: float
) -> tuple[float, float, float, float]:
    """(validated peek/s, unvalidated peek/s, state-only/s, median validated/unvalidated)."""
    async with Runtime(storage) as runtime:
        runtime.register("bench", Peeker)
        await asyncio.gather(
            *(runtime.invoke(ActorId("bench", f"a{i}"), "write") for i in range(concurrency))
        )
        on: list[float] = []
        off: list[float] = []
        state: list[float] = []
        ratios: list[float] = []
        for round_ in range(ROUNDS):
            sides: list[Callable[[], Awaitable[float]]] = []

            async def validated() -> float:
                return await _rate(runtime, "peek", concurrency, seconds)

            async def unvalidated() -> float:
                with validation_off(storage):
                    return await _rate(runtime, "peek", concurrency, seconds)

            sides = [validated, unvalidated] if round_ % 2 == 0 else [unvalidated, validated]
            rates = {side.__name__: await side() for side in sides}
            on.append(rates["validated"])
            off.append(rates["unvalidated"])
            ratios.append(rates["validated"] / rates["unvalidated"])
            state.append(await _rate(runtime, "state_only", concurrency, seconds / 2))
    return (
        statistics.median(on),
        statistics.median(off),
        statistics.median(state),
        statistics.median(ratios),
    )


async def _run(backends: list[str], seconds: float) -> None:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        urls: dict[str, str] = {"memory": "memory://", "lmdb": f"lmdb://{tmp}/lmdb"}
        if "redis" in backends:
            from kelpie.testing.redis_server import RedisServer

            server = stack.enter_context(RedisServer(tmp / "redis"))
            urls["redis"] = server.url
        print(
            f"{'backend':8} {'actors':>6} {'validated/s':>12} {'unvalidated/s':>14} "
            f"{'ratio':>6} {'state-only/s':>13}"
        )
        for name in backends:
            for concurrency in CONCURRENCY:
                storage = open_storage(urls[name])
                try:
                    on, off, state, ratio = await _measure(storage, concurrency, seconds)
                finally:
                    await storage.close()
                print(
                    f"{name:8} {concurrency:>6} {on:>12,.0f} {off:>14,.0f} "
                    f"{ratio:>6.2f} {state:>13,.0f}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per side per round")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s) {sorted(unknown)}; known: {', '.join(BACKENDS)}")
    asyncio.run(_run(backends, args.seconds))


if __name__ == "__main__":
    main()
