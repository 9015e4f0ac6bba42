"""Users plug in their own actor, workload and invariants (the API of docs/dst.md)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from kelpie.actor import Actor, ActorContext
from kelpie.dst import FaultPlan, SimConfig, Simulation, WorkloadBase, run_seed, run_storm
from tests.dst.conftest import dst_seeds


@dataclass
class Tally:
    count: int = 0


class Counter(Actor[Tally]):
    state_type = Tally

    async def add(self, ctx: ActorContext[Tally], payload: dict[str, Any]) -> int:
        ctx.state.count += 1
        await ctx.kv_set(f"seen/{payload['id']}".encode(), b"1")
        return ctx.state.count


class CounterWorkload(WorkloadBase):
    name = "counter"

    def __init__(self) -> None:
        self.acknowledged: set[str] = set()
        self.issued: set[str] = set()

    async def setup(self, sim: Simulation) -> None:
        sim.register("counter", Counter)
        self.actor = sim.actor("counter", "c")

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
        op = f"{client}.{len(self.issued)}"
        self.issued.add(op)
        outcome = await sim.call(self.actor, "add", {"id": op}, key=op, rng=rng)
        if outcome.ok:
            self.acknowledged.add(op)

    async def check(self, sim: Simulation) -> None:
        state = await sim.state(self.actor, Tally)
        seen = {k.decode()[5:] for k in await sim.kv_keys(self.actor, b"seen/")}
        if state is not None and state.count != len(seen):
            sim.violation(f"count {state.count} != {len(seen)} distinct operations")
        if not self.acknowledged <= seen:
            sim.violation(f"acknowledged but lost: {sorted(self.acknowledged - seen)}")


async def nothing_unissued(sim: Simulation) -> None:
    """An extra invariant passed through ``SimConfig.invariants``."""
    workload = sim.workload
    assert isinstance(workload, CounterWorkload)
    seen = {k.decode()[5:] for k in await sim.kv_keys(workload.actor, b"seen/")}
    if not seen <= workload.issued:
        sim.violation("an operation nobody issued was applied")


def test_a_user_workload_runs_under_every_fault_with_extra_invariants() -> None:
    config = SimConfig(
        seed=0, faults=FaultPlan.everything(), crashes=True, invariants=(nothing_unissued,)
    )
    storm = run_storm(dst_seeds(range(20)), config, CounterWorkload)
    print(storm.summary())
    assert storm.workload == "counter"
    assert storm.violations == 0, storm.summary()
    assert storm.invocations > 0


def test_a_user_invariant_that_fails_is_reported_with_its_seed() -> None:
    async def always_wrong(sim: Simulation) -> None:
        sim.violation("planted: this invariant never holds")

    seed = dst_seeds([7])[0]
    result = run_seed(CounterWorkload, SimConfig(seed=seed, invariants=(always_wrong,)))
    print(f"seed {seed}: {result.violations}")
    assert result.violations == ["planted: this invariant never holds"]
