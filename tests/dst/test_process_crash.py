"""A process crash drops the runtime: callers see an unknown outcome; nothing half-done lands."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from kelpie.actor import Actor, ActorContext
from kelpie.dst import FaultPlan, ProcessCrashedError, SimConfig, Simulation, WorkloadBase, run_seed


@dataclass
class Box:
    value: int = 0


class Slow(Actor[Box]):
    state_type = Box

    async def put(self, ctx: ActorContext[Box], payload: dict[str, Any]) -> int:
        await ctx.kv_set(b"before", b"1")
        await asyncio.sleep(payload["sleep"])  # the process dies in here
        ctx.state.value = payload["value"]
        return ctx.state.value


class CrashMidCall(WorkloadBase):
    name = "crash-mid-call"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def setup(self, sim: Simulation) -> None:
        sim.register("slow", Slow)
        self.actor = sim.actor("slow", "x")

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
        call = asyncio.ensure_future(sim.invoke(self.actor, "put", {"sleep": 10, "value": 1}))
        await asyncio.sleep(1)
        sim.crash()
        try:
            await call
        except ProcessCrashedError:
            self.seen.append("crashed")
        if await sim.kv(self.actor, b"before") is not None:
            sim.violation("the crashed invocation's KV write landed")
        # The fresh process serves the actor from what storage holds.
        assert await sim.invoke(self.actor, "put", {"sleep": 0, "value": 2}) == 2
        self.seen.append("served")

    async def check(self, sim: Simulation) -> None:
        state = await sim.state(self.actor, Box)
        if state is None or state.value != 2:
            sim.violation(f"state after the crash: {state}")
        if self.seen != ["crashed", "served"]:
            sim.violation(f"clients saw {self.seen}")


def test_a_crash_mid_invocation_is_an_unknown_outcome_and_stores_nothing() -> None:
    config = SimConfig(
        seed=1,
        faults=FaultPlan.none(),
        clients=1,
        steps=1,
        invocation_timeout=60,
        runtimes=1,  # sim.crash() below crashes the only process
        leases=False,  # the fresh process serves the actor at once
        pauses=False,
        chaos=False,
    )
    result = run_seed(CrashMidCall, config)
    print(f"seed 1: {result.violations} crashes={result.crashes}")
    assert result.violations == []
    assert result.crashes == 1
