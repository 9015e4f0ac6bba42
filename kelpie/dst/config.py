"""What defines a simulated run (``SimConfig``), and what one seed reports.

``SimConfig`` holds everything besides the workload: faults, crashes, the
topology options (how many runtimes share the store, leases, idle eviction,
random deactivations, pauses) and the client's retry policy. Options left at
``None`` are drawn per seed from the ``topology`` stream
(``kelpie.dst.cluster.Topology``), so a storm covers them all and a seed
replays them exactly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from kelpie.dst.fault_plan import FaultPlan

if TYPE_CHECKING:
    from kelpie.dst.harness import Simulation

__all__ = [
    "BATCH_CRASH_PROBABILITY",
    "MAX_KEPT_VIOLATIONS",
    "Invariant",
    "Outcome",
    "SeedResult",
    "SimConfig",
]

BATCH_CRASH_PROBABILITY = 0.05
"""With ``crashes``: the chance that a batch of two or more commits is hit mid-write."""

MAX_KEPT_VIOLATIONS = 20
"""Messages kept per seed: one bug tends to break an invariant many times."""

Invariant = Callable[["Simulation"], Awaitable[None]]
"""An extra end-of-run check: inspect ``sim`` and call ``sim.violation`` on failure."""


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines one simulated run besides the workload."""

    seed: int
    faults: FaultPlan = field(default_factory=FaultPlan.everything)
    crashes: bool = False
    """Crash a process (drop its runtime, start a fresh one) at random points."""
    max_crashes: int = 3
    clients: int = 4
    steps: int = 40
    """Steps per client."""
    attempts: int = 6
    """How many times a client tries one operation before giving up."""
    runtime: str = "kelpie"
    storage_url: str | None = None
    """``None``: ``memory://`` on the deterministic loop; else a real backend, real time."""
    invocation_timeout: float = 5.0
    group_commit: bool = True
    """Commits go through the memory backend's group-commit batches."""
    commit_latency: float | None = None
    """Virtual seconds each batch waits, like an fsync; ``None``: drawn from the seed (0-5 ms)."""
    max_time: float = 24 * 3600.0
    """Virtual-time budget; passing it is reported as a violation (livelock)."""
    invariants: tuple[Invariant, ...] = ()
    runtimes: int | None = None
    """Runtime processes alive at once on the store; ``None``: drawn per seed (1-3)."""
    leases: bool | None = None
    """Runtimes have node ids and take leases (ADR 0007); ``None``: drawn per seed."""
    lease_seconds: float | None = None
    """The runtimes' lease length; ``None``: drawn per seed (0.5 or 1 s)."""
    idle_timeout: float | None = None
    """Idle eviction after this long; ``None``: drawn per seed (0.5-2 s); ``0``: never."""
    chaos: bool = True
    """Deactivate random active actors at random moments (busy or not)."""
    pauses: bool = True
    """With two or more runtimes, pause one now and then for longer than a lease (zombies)."""
    attempt_timeout: float = 0.25
    """A client abandons an attempt on a paused process after this long and tries another."""
    idempotency_window: int = 8
    """The runtimes' ``idempotency_window``: small, so keys are evicted in every run."""
    history: bool = True
    """Record every call and check each actor's history against the workload's ``models``."""


@dataclass
class Outcome:
    """What a retrying client finally saw."""

    status: Literal["ok", "rejected", "gave_up"]
    result: Any = None
    error: BaseException | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class SeedResult:
    """The outcome of one seed."""

    seed: int
    digest: str
    invocations: int
    acknowledged: int
    gave_up: int
    crashes: int
    batch_crashes: int
    """Crashes that struck while a batch of two or more commits was being written."""
    faults: dict[str, int]
    configured_faults: list[str]
    violations: list[str]
    """The first violations (at most ``MAX_KEPT_VIOLATIONS``); see ``violation_count``."""
    violation_count: int
    virtual_time: float
    wall_time: float
    deterministic: bool
    coverage: dict[str, int] = field(default_factory=dict)
    """How often each path was taken (``kelpie.dst.coverage``), sorted by name."""
    required: tuple[str, ...] = ()
    """The paths this seed's features and workload require a storm to take."""
    topology: str = ""
    """The seed's topology, e.g. ``2 runtimes, leases 0.2 s, idle 0.1 s``."""

    @property
    def ok(self) -> bool:
        return not self.violations
