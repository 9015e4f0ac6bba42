"""Timing slices: N concurrent loops for S seconds, every call's latency recorded.

A *side* is one way of doing the benchmark's work (kelpie, the raw client, …),
given as one call per concurrent actor. ``alternate`` runs several sides in
turns of short slices, rotating who goes first, so a drift in machine speed
hits every side alike. This is benchmark code: it reads the clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

__all__ = ["Call", "Sample", "Side", "Slicer", "alternate", "run_slice", "warm_up"]

Call = Callable[[], Awaitable[None]]
"""One invocation of one actor (or its raw equivalent)."""


class Slicer(Protocol):
    """A side that runs its slices itself (e.g. in other processes)."""

    async def warm_up(self) -> None: ...

    async def run_slice(self, seconds: float, into: Sample) -> None: ...


Side: TypeAlias = "Sequence[Call] | Slicer"
"""One call per concurrent actor, or a ``Slicer``."""


@dataclass
class Sample:
    """Invocations done, time spent and every invocation's latency (seconds)."""

    done: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    """Each slice's invocations per second, in the order the slices ran."""

    @property
    def rate(self) -> float:
        """Invocations per second over the measured time."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """The nearest-rank ``q``-quantile (0 < q <= 1) of the latencies, in ms."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q * len(ordered)))
        return ordered[rank - 1] * 1000.0

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(0.50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(0.99)

    @property
    def mean_ms(self) -> float:
        """Time per invocation at this concurrency: elapsed / done, in ms."""
        return self.elapsed / self.done * 1000.0 if self.done else 0.0


async def run_slice(calls: Sequence[Call], seconds: float, into: Sample) -> None:
    """Run every call in its own loop until ``seconds`` have passed; add to ``into``."""
    perf_counter = time.perf_counter
    started = perf_counter()
    deadline = started + seconds
    latencies = into.latencies
    done = 0

    async def loop(call: Call) -> None:
        nonlocal done
        now = perf_counter()
        while now < deadline:
            await call()
            end = perf_counter()
            latencies.append(end - now)
            done += 1
            now = end

    await asyncio.gather(*(loop(call) for call in calls))
    elapsed = perf_counter() - started
    into.done += done
    into.elapsed += elapsed
    into.rates.append(done / elapsed if elapsed > 0 else 0.0)


async def warm_up(side: Side) -> None:
    """One call of each, concurrently: activations, connections and first pages."""
    if isinstance(side, Sequence):
        await asyncio.gather(*(call() for call in side))
    else:
        await side.warm_up()


async def alternate(sides: Mapping[str, Side], seconds: float, slices: int) -> dict[str, Sample]:
    """``seconds`` per side, split into ``slices`` turns; each round rotates the order."""
    names = list(sides)
    samples = {name: Sample() for name in names}
    for round_ in range(slices):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            side = sides[name]
            if isinstance(side, Sequence):
                await run_slice(side, seconds / slices, samples[name])
            else:
                await side.run_slice(seconds / slices, samples[name])
    return samples
