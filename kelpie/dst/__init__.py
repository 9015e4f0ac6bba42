"""Deterministic simulation testing: virtual time, seeded faults, replayable seeds.

The pieces, each usable alone:

- ``SimulationLoop`` / ``run_simulation`` (``loop``): asyncio with a virtual clock.
- ``SimRandom`` (``rng``): one seed, independent named streams.
- ``FaultyStorage`` (``faults``), ``FaultPlan``, ``FaultSpec`` (``fault_plan``): faults over
  any ``Storage``, and pausing a handle (zombies).
- ``Trace`` (``trace``): the run's digest.
- ``SimConfig``, ``SeedResult`` (``config``); ``Workload``, ``WorkloadBase`` (``workload``).
- ``Topology``, ``Cluster`` (``cluster``): 1-3 runtime processes on one store, crashes,
  pauses, random deactivations; ``Process`` (``process``): one incarnation.
- ``KeyWindow`` (``client``): when a client may still retry a key; ``coverage``: the paths
  counted; ``exclusive``: the one-activation-at-a-time watch.
- ``Simulation``, ``run_seed`` (``harness``): one seed end to end.
- ``run_storm`` (``storm``): many seeds, and the summary; ``kelpie dst`` (``cli``).

See ``docs/dst.md``.
"""

from kelpie.dst.cluster import Topology
from kelpie.dst.faults import FaultInjector, FaultKind, FaultPlan, FaultSpec, FaultyStorage
from kelpie.dst.harness import (
    AttemptTimeoutError,
    Outcome,
    ProcessCrashedError,
    RuntimeOptions,
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
    "AttemptTimeoutError",
    "FaultInjector",
    "FaultKind",
    "FaultPlan",
    "FaultSpec",
    "FaultyStorage",
    "Outcome",
    "ProcessCrashedError",
    "RuntimeOptions",
    "SeedResult",
    "SimConfig",
    "SimRandom",
    "Simulation",
    "SimulationDeadlockError",
    "SimulationError",
    "SimulationLoop",
    "SimulationTimeLimitError",
    "StormResult",
    "Topology",
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
