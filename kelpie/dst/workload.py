"""What a simulated workload implements (``Workload``), and a convenient base."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from kelpie.identity import ActorId

if TYPE_CHECKING:
    from kelpie.dst.harness import Simulation

__all__ = ["Workload", "WorkloadBase"]


class Workload(Protocol):
    """A simulated application: actor types, client steps, invariants.

    ``setup`` registers actor types (``sim.register``) and may seed data;
    ``step`` is one client action (usually ``await sim.call(...)``);
    ``check_actor`` runs whenever an actor has no invocation in flight (cheap
    invariants that must hold at every quiet moment); ``check`` runs at the
    end, with faults off, on a freshly restarted process. Both report through
    ``sim.violation(message)``. Optional attributes: ``models`` (namespace ->
    ``kelpie.dst.linearizability.Model``: the history of those actors is
    checked for linearizability) and ``required_paths`` (coverage paths,
    ``sim.count``, that a storm must take at least once).
    """

    name: str

    async def setup(self, sim: Simulation) -> None: ...

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None: ...

    async def check_actor(self, sim: Simulation, actor: ActorId) -> None: ...

    async def check(self, sim: Simulation) -> None: ...


class WorkloadBase:
    """Convenience base: no per-actor checks, nothing to set up or check, no model."""

    name = "workload"
    models: ClassVar[Mapping[str, Any]] = {}
    """Namespace -> linearizability model; the default checks no history."""
    required_paths: ClassVar[tuple[str, ...]] = ()
    """Coverage paths a storm of this workload must take (``sim.count``)."""

    async def setup(self, sim: Simulation) -> None:
        return None

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
        raise NotImplementedError

    async def check_actor(self, sim: Simulation, actor: ActorId) -> None:
        return None

    async def check(self, sim: Simulation) -> None:
        return None
