"""Deterministic simulation testing: virtual time, seeded faults, replayable seeds.

The pieces, each usable alone:

- ``SimulationLoop`` / ``run_simulation`` (``loop``): asyncio with a virtual clock.
- ``SimRandom`` (``rng``): one seed, independent named streams.
- ``FaultyStorage``, ``FaultPlan``, ``FaultSpec`` (``faults``): faults over any ``Storage``.
- ``Trace`` (``trace``): the run's digest.
- ``Simulation``, ``Workload``, ``SimConfig``, ``run_seed`` (``harness``): one seed end to end.
- ``run_storm`` (``storm``): many seeds, and the summary; ``kelpie dst`` (``cli``).

See ``docs/dst.md``.
"""

from kelpie.dst.faults import FaultInjector, FaultKind, FaultPlan, FaultSpec, FaultyStorage
from kelpie.dst.harness import (
    Outcome,
    ProcessCrashedError,
    SeedResult,
    SimConfig,
    Simulation,
    Workload,
    WorkloadBase,
    run_seed,
)
from kelpie.dst.loop import (
    SimulationDeadlockError,
    SimulationError,
    SimulationLoop,
    SimulationTimeLimitError,
    run_simulation,
)
from kelpie.dst.rng import SimRandom, derive_seed, stream
from kelpie.dst.storm import StormResult, replay_commands, run_storm
from kelpie.dst.trace import Trace

__all__ = [
    "FaultInjector",
    "FaultKind",
    "FaultPlan",
    "FaultSpec",
    "FaultyStorage",
    "Outcome",
    "ProcessCrashedError",
    "SeedResult",
    "SimConfig",
    "SimRandom",
    "Simulation",
    "SimulationDeadlockError",
    "SimulationError",
    "SimulationLoop",
    "SimulationTimeLimitError",
    "StormResult",
    "Trace",
    "Workload",
    "WorkloadBase",
    "derive_seed",
    "replay_commands",
    "run_seed",
    "run_simulation",
    "run_storm",
    "stream",
]
