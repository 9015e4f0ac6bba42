"""Running one seed: processes, clients, crashes, faults, invariants.

``run_seed(config)`` builds everything a simulation needs from one seed: the
``SimulationLoop`` (virtual time) over ``memory://`` -- or a real event loop
over a real backend when ``config.storage_url`` is given -- a ``FaultInjector``,
a *process* (a ``Runtime`` on a ``FaultyStorage`` handle), and the workload's
clients. It then

1. runs ``workload.setup(sim)``, then ``config.clients`` concurrent clients,
   each calling ``workload.step(sim, client, rng)`` ``config.steps`` times;
2. when ``config.crashes`` is set, crashes the process at random points: its
   storage handle is severed (nothing it does reaches storage any more), every
   task it started is cancelled, no cleanup runs, and a fresh ``Runtime``
   starts on the same storage;
3. turns faults off, restarts the process once more, and runs
   ``workload.check(sim)`` and ``config.invariants``.

Every invocation, result and fault is recorded in the trace; the run's digest
is the same for two runs of one seed (memory backend). Anything the code under
test raises that a client does not expect is a violation, not a crash of the
harness.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from kelpie.actor.actor import Actor
from kelpie.actor.id import ActorId
from kelpie.dst.faults import FaultInjector, FaultPlan, FaultyStorage
from kelpie.dst.inspect import Inspector, KelpieInspector
from kelpie.dst.loop import SimulationLoop
from kelpie.dst.naive import NaiveInspector, NaiveRuntime
from kelpie.dst.rng import SimRandom
from kelpie.dst.trace import Trace
from kelpie.errors import (
    ActorActiveElsewhereError,
    CorruptStateError,
    InvocationTimeoutError,
    KelpieError,
    MailboxFullError,
    RuntimeClosedError,
    StorageError,
)
from kelpie.storage.memory import MemoryStorage
from kelpie.storage.protocol import Storage

__all__ = [
    "RUNTIMES",
    "Invariant",
    "Outcome",
    "ProcessCrashedError",
    "RuntimeKind",
    "RuntimeLike",
    "SeedResult",
    "SimConfig",
    "Simulation",
    "Workload",
    "WorkloadBase",
    "run_seed",
]


class ProcessCrashedError(Exception):
    """The simulated process died while serving the call: its outcome is unknown."""


class RuntimeLike(Protocol):
    """What the harness needs of a runtime (``kelpie.runtime.Runtime`` has it)."""

    def register(self, namespace: str, actor_cls: type[Actor[Any]]) -> None: ...

    async def invoke(
        self,
        actor_id: ActorId,
        operation: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any: ...

    async def close(self) -> None: ...


def _kelpie_runtime(storage: Storage, invocation_timeout: float) -> RuntimeLike:
    from kelpie.runtime import Runtime

    return Runtime(storage, invocation_timeout=invocation_timeout)


def _naive_runtime(storage: Storage, invocation_timeout: float) -> RuntimeLike:
    return NaiveRuntime(storage, invocation_timeout=invocation_timeout)


@dataclass(frozen=True)
class RuntimeKind:
    """A runtime under test: how to start one, and how to read what it stored."""

    name: str
    factory: Callable[[Storage, float], RuntimeLike]
    inspector: Inspector


RUNTIMES: dict[str, RuntimeKind] = {
    "kelpie": RuntimeKind("kelpie", _kelpie_runtime, KelpieInspector()),
    "naive": RuntimeKind("naive", _naive_runtime, NaiveInspector()),
}


class Workload(Protocol):
    """A simulated application: its actors, its clients' steps, its invariants.

    ``setup`` registers actor types (``sim.register``) and may seed data;
    ``step`` is one client action (usually ``await sim.call(...)``);
    ``check_actor`` runs whenever an actor has no invocation in flight (cheap
    invariants that must hold at every quiet moment); ``check`` runs at the
    end, with faults off, on a freshly restarted process. Both report through
    ``sim.violation(message)``.
    """

    name: str

    async def setup(self, sim: Simulation) -> None: ...

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None: ...

    async def check_actor(self, sim: Simulation, actor: ActorId) -> None: ...

    async def check(self, sim: Simulation) -> None: ...


class WorkloadBase:
    """Convenience base: no per-actor checks, nothing to set up or check."""

    name = "workload"

    async def setup(self, sim: Simulation) -> None:
        return None

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
        raise NotImplementedError

    async def check_actor(self, sim: Simulation, actor: ActorId) -> None:
        return None

    async def check(self, sim: Simulation) -> None:
        return None


Invariant = Callable[["Simulation"], Awaitable[None]]
"""An extra end-of-run check: inspect ``sim`` and call ``sim.violation`` on failure."""


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines one simulated run besides the workload."""

    seed: int
    faults: FaultPlan = field(default_factory=FaultPlan.everything)
    crashes: bool = False
    """Crash the process (drop the runtime, start a fresh one) at random points."""
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

    @property
    def ok(self) -> bool:
        return not self.violations


BATCH_CRASH_PROBABILITY = 0.05
"""With ``crashes``: the chance that a batch of two or more commits is hit mid-write."""

MAX_KEPT_VIOLATIONS = 20
"""Messages kept per seed: one bug tends to break an invariant many times."""

# Which simulated process a task belongs to (inherited by the tasks it creates).
_PROCESS: contextvars.ContextVar[_Process | None] = contextvars.ContextVar(
    "kelpie_dst_process", default=None
)

# What a client may retry: transient storage trouble and a crashed process.
_RETRYABLE: tuple[type[BaseException], ...] = (
    StorageError,
    InvocationTimeoutError,
    MailboxFullError,
    ActorActiveElsewhereError,
    RuntimeClosedError,
    ProcessCrashedError,
)


class _Process:
    """One incarnation of the application process: a runtime and its tasks."""

    def __init__(
        self, number: int, storage: FaultyStorage, factory: Callable[[], RuntimeLike]
    ) -> None:
        self.number = number
        self.storage = storage
        self.dead = False
        self.tasks: dict[asyncio.Task[Any], None] = {}
        self.callers: dict[asyncio.Task[Any], None] = {}
        """Client tasks inside a call to this process right now."""
        self.crash_cancelled: set[asyncio.Task[Any]] = set()
        self.context = contextvars.copy_context()
        self.context.run(_PROCESS.set, self)
        # Built inside the process's context, so any task it starts is the process's.
        self.runtime: RuntimeLike = self.context.run(factory)


def _task_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    context: contextvars.Context | None = None,
) -> asyncio.Task[Any]:
    task = asyncio.Task(coro, loop=loop, context=context)
    process = context.get(_PROCESS) if context is not None else _PROCESS.get()
    if process is not None:
        if process.dead:
            task.cancel()
        else:
            process.tasks[task] = None
            task.add_done_callback(lambda t: process.tasks.pop(t, None))
    return task


class Simulation:
    """What a workload sees: invoke actors, draw randomness, record, report."""

    def __init__(
        self,
        config: SimConfig,
        workload: Workload,
        storage: Storage,
        *,
        deterministic: bool,
    ) -> None:
        self.config = config
        self.seed = config.seed
        self.random = SimRandom(config.seed)
        self.trace = Trace()
        self.workload = workload
        self.storage = storage
        """The real storage, without faults: for invariant checks only."""
        self.deterministic = deterministic
        self.kind = RUNTIMES[config.runtime]
        self.injector = FaultInjector(config.faults, self.random.stream("faults"), self.trace)
        self.invocations = 0
        self.acknowledged = 0
        self.gave_up = 0
        self.crashes = 0
        self.batch_crashes = 0
        self.violations: list[str] = []
        """The first ``MAX_KEPT_VIOLATIONS`` messages; ``violation_count`` counts all."""
        self.violation_count = 0
        self._registrations: list[tuple[str, type[Actor[Any]]]] = []
        self._in_flight: dict[ActorId, int] = {}
        self._checking = False
        self._id_prefix = "" if deterministic else f"run{secrets.token_hex(4)}-"
        self._crash_rng = self.random.stream("crashes")
        self._crash_points: set[int] = set()
        self._batch_crash_budget = config.max_crashes if config.crashes else 0
        self._processes = 0
        self._process = self._start_process()

    # -- for workloads ---------------------------------------------------------

    @property
    def now(self) -> float:
        """The loop's time (virtual in a simulation)."""
        return asyncio.get_running_loop().time()

    def actor(self, namespace: str, id: str) -> ActorId:
        """An ``ActorId`` private to this run (unique per run over a shared real store)."""
        return ActorId(namespace, self._id_prefix + id)

    def register(self, namespace: str, actor_cls: type[Actor[Any]]) -> None:
        """Register an actor type with this process and every later one."""
        self._registrations.append((namespace, actor_cls))
        self._process.runtime.register(namespace, actor_cls)

    def violation(self, message: str) -> None:
        """Report a broken invariant (recorded in the trace and the result)."""
        self.trace.record("violation", message)
        self.violation_count += 1
        if len(self.violations) < MAX_KEPT_VIOLATIONS:
            self.violations.append(message)

    async def state(self, actor: ActorId, state_type: type[Any]) -> Any | None:
        """The actor's committed state, read from storage behind the runtime's back."""
        return await self.kind.inspector.state(self.storage, actor, state_type)

    async def kv(self, actor: ActorId, key: bytes) -> bytes | None:
        """The actor's committed value of ``key``, read from storage directly."""
        return await self.kind.inspector.kv(self.storage, actor, key)

    async def kv_keys(self, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        return await self.kind.inspector.kv_keys(self.storage, actor, prefix)

    async def invoke(
        self,
        actor: ActorId,
        operation: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        """One attempt through the current process; a crash mid-call raises ProcessCrashedError."""
        process = self._process
        self.invocations += 1
        number = self.invocations
        now = asyncio.get_running_loop().time()
        self.trace.record("invoke", number, now, process.number, str(actor), operation, payload)
        if number in self._crash_points:
            self._schedule_crash()
        self._in_flight[actor] = self._in_flight.get(actor, 0) + 1
        # The call runs in this client task, marked as the process's for its
        # duration: every task the runtime starts meanwhile belongs to the process.
        caller = asyncio.current_task()
        assert caller is not None
        token = _PROCESS.set(process)
        process.callers[caller] = None
        try:
            try:
                result = await process.runtime.invoke(
                    actor, operation, payload, idempotency_key=idempotency_key
                )
            except BaseException as error:
                if caller in process.crash_cancelled:
                    raise self._crashed(caller, process, number) from None
                if not isinstance(error, asyncio.CancelledError):
                    self.trace.record("error", number, type(error).__name__)
                raise
            if caller in process.crash_cancelled:  # the reply died with the process
                raise self._crashed(caller, process, number)
            self.trace.record("result", number, result)
            return result
        finally:
            _PROCESS.reset(token)
            process.callers.pop(caller, None)
            left = self._in_flight[actor] - 1
            if left:
                self._in_flight[actor] = left
            else:
                del self._in_flight[actor]
                if not self._checking:
                    await self.workload.check_actor(self, actor)

    def _crashed(
        self, caller: asyncio.Task[Any], process: _Process, number: int
    ) -> ProcessCrashedError:
        process.crash_cancelled.discard(caller)
        if caller.cancelling():
            caller.uncancel()
        self.trace.record("crashed", number)
        return ProcessCrashedError(f"process {process.number} crashed during the call")

    async def call(
        self,
        actor: ActorId,
        operation: str,
        payload: Any = None,
        *,
        key: str,
        rng: random.Random,
        attempts: int | None = None,
    ) -> Outcome:
        """Invoke with idempotency key ``key``, retrying transient failures.

        Retries (same key, seeded back-off) on storage errors -- including
        ``CommitOutcomeUnknownError`` -- timeouts and process crashes; an
        exception raised by the handler itself is a definitive ``rejected``.
        After ``attempts`` tries the client gives up: the outcome is unknown.
        """
        limit = attempts if attempts is not None else self.config.attempts
        last: BaseException | None = None
        for attempt in range(1, limit + 1):
            try:
                result = await self.invoke(actor, operation, payload, idempotency_key=key)
            except CorruptStateError:
                raise
            except _RETRYABLE as exc:
                last = exc
                await asyncio.sleep(rng.uniform(0.001, 0.02) * attempt)
                continue
            except KelpieError:
                raise
            except Exception as exc:
                return Outcome("rejected", error=exc, attempts=attempt)
            self.acknowledged += 1
            return Outcome("ok", result=result, attempts=attempt)
        self.gave_up += 1
        self.trace.record("gave_up", str(actor), operation, key)
        return Outcome("gave_up", error=last, attempts=limit)

    # -- processes -------------------------------------------------------------

    def _start_process(self) -> _Process:
        self._processes += 1
        number = self._processes
        # Each process opens its own handle on the store, as a real process
        # would: its commit batches die with it.
        inner = self.storage
        if isinstance(inner, MemoryStorage):
            inner = inner.handle()
            if self.config.crashes:
                inner.on_batch = self._batch_started
        handle = FaultyStorage(inner, self.injector, name=f"process {number}")
        timeout = self.config.invocation_timeout
        process = _Process(number, handle, lambda: self.kind.factory(handle, timeout))
        for namespace, actor_cls in self._registrations:
            process.runtime.register(namespace, actor_cls)
        self.trace.record("process", number)
        return process

    def crash(self, *, final: bool = False) -> None:
        """Kill the current process without any cleanup and start a fresh one."""
        process = self._process
        process.dead = True
        in_flight = getattr(process.storage.inner, "batch_in_flight", 0)
        if in_flight >= 2 and not final:
            self.batch_crashes += 1
            self.trace.record("crash_during_batch", process.number, in_flight)
        process.storage.sever()
        for task in list(process.tasks):
            task.cancel()
        for caller in list(process.callers):
            process.crash_cancelled.add(caller)
            caller.cancel()
        if not final:
            self.crashes += 1
        self.trace.record("crash", process.number, self.invocations)
        self._process = self._start_process()

    def _batch_started(self, size: int, wait: float) -> None:
        """Now and then, crash the process while a batch of commits is being written."""
        if size < 2 or wait <= 0 or self._batch_crash_budget <= 0:
            return
        if self._crash_rng.random() < BATCH_CRASH_PROBABILITY:
            self._batch_crash_budget -= 1
            delay = self._crash_rng.uniform(0.0, wait)
            asyncio.get_running_loop().call_later(delay, self._crash_if_running)

    def _schedule_crash(self) -> None:
        delay = self._crash_rng.uniform(0.0, 0.02)
        asyncio.get_running_loop().call_later(delay, self._crash_if_running)

    def _crash_if_running(self) -> None:
        if not self._checking:
            self.crash()

    # -- the run -----------------------------------------------------------------

    async def run(self) -> None:
        config = self.config
        if config.crashes and config.max_crashes > 0:
            expected = max(1, config.clients * config.steps)
            count = self._crash_rng.randint(1, config.max_crashes)
            self._crash_points = {self._crash_rng.randint(1, expected) for _ in range(count)}
        await self.workload.setup(self)
        streams = [self.random.stream(f"client/{c}") for c in range(config.clients)]

        async def client(number: int) -> None:
            for _ in range(config.steps):
                await self.workload.step(self, number, streams[number])

        await asyncio.gather(*(client(c) for c in range(config.clients)))
        # The end: faults off, one last restart, then the invariants.
        self._checking = True
        self.injector.enabled = False
        self.trace.record("quiesce", self.invocations)
        if self._crash_rng.random() < 0.5:
            self.crash(final=True)
        else:
            await self._process.runtime.close()
            self._process = self._start_process()
        await self.workload.check(self)
        for invariant in config.invariants:
            await invariant(self)
        await self._process.runtime.close()


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
        asyncio.get_running_loop().set_task_factory(_task_factory)  # type: ignore[arg-type]
        if deterministic:
            storage: Storage = MemoryStorage(
                group_commit=config.group_commit, commit_latency=_commit_latency(config)
            )
        else:
            from kelpie.storage.registry import open_storage

            assert config.storage_url is not None
            storage = open_storage(config.storage_url)
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
    with runner:
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
    )
