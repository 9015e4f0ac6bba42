"""Mixed: ledger accounts and registers in one run (the default ``kelpie dst`` workload).

Each client step is a ledger step (deposits, withdrawals, transfers) or a
registers step (writes, peeks, read-own-writes, deletes, lists, failing
handlers, replays), drawn from the client's stream. Both workloads' models,
required paths and invariants apply.
"""

from __future__ import annotations

import random
from typing import ClassVar

from kelpie.dst.harness import Simulation, WorkloadBase
from kelpie.dst.linearizability import Model
from kelpie.dst.workloads.ledger import LedgerWorkload
from kelpie.dst.workloads.registers import RegistersWorkload
from kelpie.identity import ActorId

__all__ = ["MixedWorkload"]


class MixedWorkload(WorkloadBase):
    """The ledger and the registers side by side, on one runtime and one store."""

    name = "mixed"
    models: ClassVar[dict[str, Model]] = {**LedgerWorkload.models, **RegistersWorkload.models}
    required_paths: ClassVar[tuple[str, ...]] = (
        LedgerWorkload.required_paths + RegistersWorkload.required_paths
    )

    def __init__(self, registers_share: float = 0.5) -> None:
        self.ledger = LedgerWorkload()
        self.registers = RegistersWorkload()
        self.registers_share = registers_share

    async def setup(self, sim: Simulation) -> None:
        await self.ledger.setup(sim)
        await self.registers.setup(sim)

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
        if rng.random() < self.registers_share:
            await self.registers.step(sim, client, rng)
        else:
            await self.ledger.step(sim, client, rng)

    async def check_actor(self, sim: Simulation, actor: ActorId) -> None:
        if self.registers.owns(actor):
            await self.registers.check_actor(sim, actor)
        else:
            await self.ledger.check_actor(sim, actor)

    async def check(self, sim: Simulation) -> None:
        await self.ledger.check(sim)
        await self.registers.check(sim)
