"""Running one seed: the workload's clients against a simulated cluster, then the checks.

``run_seed(workload, config)`` builds everything a simulation needs from one
seed: the ``SimulationLoop`` (virtual time) over ``memory://`` -- or a real
event loop over a real backend when ``config.storage_url`` is given -- a
``FaultInjector``, the seed's topology of runtime processes
(``kelpie.dst.cluster``), and the workload's clients. It then

1. runs ``workload.setup(sim)``, then ``config.clients`` concurrent clients,
   each calling ``workload.step(sim, client, rng)`` ``config.steps`` times,
   while the cluster crashes, pauses and deactivates at random;
2. stops the chaos, turns faults off, closes or crashes every process and
   starts one fresh process;
3. runs ``workload.check(sim)`` and ``config.invariants``, counts what the
   stored records show (idempotency evictions), and checks the recorded
   history of every actor with a model for linearizability.

Every invocation, result and fault is recorded in the trace; the run's digest
is the same for two runs of one seed (memory backend). Anything the code under
test raises that a client does not expect is a violation, not a crash of the
harness.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from kelpie.dst import coverage
from kelpie.dst.config import Invariant, Outcome, SeedResult, SimConfig
from kelpie.dst.exclusive import WATCH, Watch
from kelpie.dst.loop import SimulationLoop
from kelpie.dst.process import (
    RUNTIMES,
    AttemptTimeoutError,
    ProcessCrashedError,
    RuntimeKind,
    RuntimeLike,
    RuntimeOptions,
    task_factory,
)
from kelpie.dst.rng import SimRandom
from kelpie.dst.simulation import Simulation
from kelpie.dst.workload import Workload, WorkloadBase
from kelpie.storage.memory import MemoryStorage
from kelpie.storage.protocol import Storage

__all__ = [
    "RUNTIMES",
    "AttemptTimeoutError",
    "Invariant",
    "Outcome",
    "ProcessCrashedError",
    "RuntimeKind",
    "RuntimeLike",
    "RuntimeOptions",
    "SeedResult",
    "SimConfig",
    "Simulation",
    "Workload",
    "WorkloadBase",
    "run_seed",
]


def _unretrieved(holder: dict[str, Simulation], context: dict[str, Any]) -> None:
    """The loop's exception handler: keep quiet about exceptions nobody retrieved.

    They are reported when the garbage collector frees their future -- at no
    deterministic moment -- so they are neither printed nor traced (e.g. the
    stop future of a failed idle eviction, which the sweeper does not await).
    """


class _QuietRuntimeLog(logging.Handler):
    """Counts the runtime's warnings (failed renewals, deactivations) instead of printing them.

    Under injected faults they are expected; ``sim.coverage`` keeps their number.
    """

    def __init__(self, holder: dict[str, Simulation]) -> None:
        super().__init__(logging.WARNING)
        self.holder = holder
        self.logger = logging.getLogger("kelpie.runtime")
        self.propagate = True

    def __enter__(self) -> None:
        self.propagate = self.logger.propagate
        self.logger.addHandler(self)
        self.logger.propagate = False

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.propagate = self.propagate

    def emit(self, record: logging.LogRecord) -> None:
        sim = self.holder.get("sim")
        if sim is not None:
            sim.count(coverage.RUNTIME_WARNING)


def _commit_latency(config: SimConfig) -> float:
    """The memory backend's batch wait for this seed: 0 to 5 ms of virtual time."""
    if config.commit_latency is not None:
        return config.commit_latency
    return SimRandom(config.seed).stream("storage").choice((0.0, 0.0005, 0.001, 0.002, 0.005))


def run_seed(
    workload_factory: Callable[[], Workload],
    config: SimConfig,
) -> SeedResult:
    """Run one seed to the end and report; never raises for a failure of the code under test."""
    deterministic = config.storage_url is None
    started = time.perf_counter()
    holder: dict[str, Simulation] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(task_factory)  # type: ignore[arg-type]
        loop.set_exception_handler(lambda _, context: _unretrieved(holder, context))
        if deterministic:
            storage: Storage = MemoryStorage(
                group_commit=config.group_commit, commit_latency=_commit_latency(config)
            )
        else:
            from kelpie.storage.registry import open_storage

            assert config.storage_url is not None
            storage = open_storage(config.storage_url)
        WATCH.set(Watch(lambda message: holder["sim"].violation(message)))
        try:
            sim = Simulation(config, workload_factory(), storage, deterministic=deterministic)
            holder["sim"] = sim
            await sim.run()
        finally:
            await storage.close()

    error: str | None = None
    virtual_time = 0.0
    if deterministic:
        loop = SimulationLoop(max_time=config.max_time)
        runner = asyncio.Runner(loop_factory=lambda: loop)
    else:
        runner = asyncio.Runner()
    quiet = _QuietRuntimeLog(holder)
    with runner, quiet:
        try:
            runner.run(main())
        except Exception as exc:
            error = f"simulation error: {type(exc).__name__}: {exc}\n" + "".join(
                traceback.format_exception(exc)[-6:]
            )
        virtual_time = runner.get_loop().time() if deterministic else 0.0
    wall = time.perf_counter() - started
    sim = holder.get("sim")
    if sim is None:
        raise RuntimeError(error or "the simulation did not start")
    if error is not None:
        sim.violation(error)
    required = sim.topology.required(config.crashes)
    required += tuple(getattr(sim.workload, "required_paths", ()))
    return SeedResult(
        seed=config.seed,
        digest=sim.trace.digest,
        invocations=sim.invocations,
        acknowledged=sim.acknowledged,
        gave_up=sim.gave_up,
        crashes=sim.crashes,
        batch_crashes=sim.batch_crashes,
        faults=dict(sorted(sim.injector.fired.items())),
        configured_faults=sim.injector.configured,
        violations=list(sim.violations),
        violation_count=sim.violation_count,
        virtual_time=virtual_time,
        wall_time=wall,
        deterministic=deterministic,
        coverage={path: n for path, n in sorted(sim.coverage.items()) if n},
        required=tuple(dict.fromkeys(required)),
        topology=sim.topology.describe(),
    )
