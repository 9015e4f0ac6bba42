"""The simulated deployment: 1-3 runtime processes on one store, and what happens to them.

``Topology.draw`` picks, from the seed's ``topology`` stream, how many runtime
processes are alive at once, whether they take leases (and for how long), and
the idle-eviction timeout; options pinned in ``SimConfig`` are used as given.
``Cluster`` runs that topology:

- every process opens its own handle on the store, wrapped in its own
  ``FaultyStorage`` (faults are shared, a crash or pause is not);
- **crashes** kill one process at a time -- its handle severed, its tasks
  cancelled, no cleanup -- and start a replacement in its place (a new node
  id: the dead node's leases must expire before another node takes over);
- **pauses** freeze one process's storage handle for longer than a lease, so
  another runtime takes its actors over; when it resumes, its stale
  activations try to commit and must be refused (zombies);
- **chaos** deactivates random active actors at random moments, busy or not,
  and the actor of every 20th-60th call just after the call started (so the
  stop queues behind it); a watcher counts the activations that ended without
  being asked to (idle evictions).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kelpie.dst import coverage
from kelpie.dst.config import BATCH_CRASH_PROBABILITY, SimConfig
from kelpie.dst.faults import FaultyStorage
from kelpie.dst.lease_watch import LeaseWatch
from kelpie.dst.process import PROCESS, Process, RuntimeKind, RuntimeOptions
from kelpie.dst.rng import SimRandom
from kelpie.identity import ActorId
from kelpie.storage.base import StorageBase
from kelpie.storage.memory import MemoryStorage

if TYPE_CHECKING:
    from kelpie.dst.harness import Simulation

__all__ = ["Cluster", "Topology"]

_LEASES = (0.5, 1.0)
_IDLE = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class Topology:
    """How one seed deploys the runtimes under test."""

    runtimes: int
    leases: bool
    lease_seconds: float
    idle_timeout: float | None
    chaos: bool
    pauses: bool

    @classmethod
    def draw(cls, config: SimConfig, kind: RuntimeKind) -> Topology:
        """The seed's topology: drawn from its ``topology`` stream unless pinned in ``config``."""
        rng = SimRandom(config.seed).stream("topology")
        # Every value is drawn whether pinned or not, so pinning one keeps the others.
        runtimes = rng.choice((1, 2, 2, 3))
        leases = rng.random() < 0.5
        lease_seconds = rng.choice(_LEASES)
        idle: float | None = rng.choice(_IDLE)
        if config.runtimes is not None:
            runtimes = config.runtimes
        if config.leases is not None:
            leases = config.leases
        if config.lease_seconds is not None:
            lease_seconds = config.lease_seconds
        if config.idle_timeout is not None:
            idle = config.idle_timeout if config.idle_timeout > 0 else None
        if not kind.cluster:
            return cls(1, False, lease_seconds, None, False, False)
        return cls(
            runtimes, leases, lease_seconds, idle, config.chaos, config.pauses and runtimes > 1
        )

    def describe(self) -> str:
        parts = [f"{self.runtimes} runtime{'s' if self.runtimes > 1 else ''}"]
        parts.append(f"leases {self.lease_seconds:g} s" if self.leases else "no leases")
        parts.append(f"idle {self.idle_timeout:g} s" if self.idle_timeout else "no idle eviction")
        if self.chaos:
            parts.append("chaos")
        if self.pauses:
            parts.append("pauses")
        return ", ".join(parts)

    def required(self, crashes: bool) -> tuple[str, ...]:
        """The coverage paths this topology must take somewhere in a storm."""
        paths = []
        if crashes:
            paths.append(coverage.PROCESS_CRASH)
        if self.runtimes > 1:
            paths.append(coverage.CONFLICT)
            if self.leases:
                paths.append(coverage.LEASE_REDIRECT)
                if crashes or self.pauses:
                    paths.append(coverage.LEASE_TAKEOVER)
        if self.pauses:
            paths += [coverage.PAUSE, coverage.ZOMBIE_REJECTED]
        if self.chaos:
            paths.append(coverage.CHAOS_DEACTIVATION)
        if self.idle_timeout is not None:
            paths.append(coverage.IDLE_EVICTION)
        return tuple(paths)


class Cluster:
    """The live processes of a run (one per topology slot) and their misfortunes."""

    def __init__(self, sim: Simulation, topology: Topology) -> None:
        self.sim = sim
        self.topology = topology
        self.processes: list[Process] = []
        """The current incarnation in each slot."""
        self.everyone: list[Process] = []
        """Every incarnation ever started (their storage counters are summed at the end)."""
        self._started = 0
        self.crash_rng = sim.random.stream("crashes")
        self._chaos_rng = sim.random.stream("chaos")
        self._pause_rng = sim.random.stream("pauses")
        config = sim.config
        self._batch_crash_budget = config.max_crashes if config.crashes else 0
        self._asked: Counter[tuple[int, ActorId]] = Counter()
        self._seen: dict[int, set[ActorId]] = {}
        self._background: list[asyncio.Task[Any]] = []
        self._suspects: dict[int, float] = {}
        self.aim_at = 0
        """With chaos: the attempt number whose actor is deactivated just after it starts."""
        if topology.leases and isinstance(sim.storage, MemoryStorage):
            watch = LeaseWatch(
                topology.lease_seconds,
                asyncio.get_running_loop().time,
                sim.violation,
                sim.count,
            )
            sim.storage.observe_commits(watch.observe)
        for slot in range(topology.runtimes):
            self.processes.append(self.start(slot))

    # -- processes ----------------------------------------------------------------

    def start(self, slot: int) -> Process:
        """Start a fresh process (its own handle on the store) for ``slot``."""
        sim = self.sim
        self._started += 1
        number = self._started
        inner = sim.storage
        # Which of the runtime's write paths this process takes (BufferingFaultyTransaction):
        # its own stream, so the choice moves no other draw of the seed.
        buffered = sim.random.stream("write-path").random() < 0.5
        buffered = buffered and isinstance(inner, StorageBase)  # kelpie's own transactions
        sim.count(coverage.BUFFERED_WRITES if buffered else coverage.COROUTINE_WRITES)
        if isinstance(inner, MemoryStorage):
            inner = inner.handle()
        handle = FaultyStorage(inner, sim.injector, name=f"process {number}", buffered=buffered)
        topology = self.topology
        node_id = f"node{number}" if topology.leases else None
        options = RuntimeOptions(
            invocation_timeout=sim.config.invocation_timeout,
            node_id=node_id,
            lease_seconds=topology.lease_seconds,
            idle_timeout=topology.idle_timeout,
            idempotency_window=sim.config.idempotency_window,
        )
        factory = sim.kind.factory
        if not sim.kind.cluster:
            options = RuntimeOptions(invocation_timeout=sim.config.invocation_timeout)
        process = Process(number, slot, handle, node_id, lambda: factory(handle, options))
        if isinstance(inner, MemoryStorage):
            inner.on_batch = lambda size, wait: self._batch_started(process, size, wait)
        for namespace, actor_cls in sim.registrations:
            process.runtime.register(namespace, actor_cls)
        self.everyone.append(process)
        sim.trace.record("process", number, slot, node_id)
        return process

    def owner(self, node_id: str) -> Process | None:
        """The live process with ``node_id``, if any."""
        for process in self.processes:
            if process.node_id == node_id:
                return process
        return None

    def route(self, rng: random.Random, prefer: Process | None, avoid: set[int]) -> Process:
        """The process a client asks next: ``prefer`` if live and answering, else a random one.

        Like a load balancer's health check, a process that just let a client
        time out is avoided for a while by every client (and ``avoid`` by this one).
        """
        processes = self.processes
        if len(processes) == 1:
            return processes[0]
        suspects = self._suspects
        if suspects:
            now = asyncio.get_running_loop().time()
            for slot, until in list(suspects.items()):
                if until <= now:
                    del suspects[slot]
        if (
            prefer is not None
            and not prefer.dead
            and prefer.slot not in avoid
            and prefer.slot not in suspects
        ):
            return prefer
        candidates = [p for p in processes if p.slot not in avoid and p.slot not in suspects]
        if not candidates:
            candidates = [p for p in processes if p.slot not in avoid] or processes
        return candidates[0] if len(candidates) == 1 else rng.choice(candidates)

    def answering(self, process: Process, avoid: set[int]) -> bool:
        """Whether a client would ask ``process`` now (live, not avoided, not suspected)."""
        if process.dead or process.slot in avoid:
            return False
        until = self._suspects.get(process.slot)
        return until is None or until <= asyncio.get_running_loop().time()

    def suspect(self, process: Process) -> None:
        """``process`` let a client time out: route around it for a while."""
        until = asyncio.get_running_loop().time() + 2 * self.sim.config.attempt_timeout
        self._suspects[process.slot] = until

    def crash(
        self, process: Process | None = None, *, final: bool = False, replace: bool = True
    ) -> None:
        """Kill ``process`` (default: a random one) without cleanup; start its replacement."""
        sim = self.sim
        if process is None:
            processes = self.processes
            process = processes[0] if len(processes) == 1 else self.crash_rng.choice(processes)
        if process.dead:
            return
        process.dead = True
        in_flight = getattr(process.storage.inner, "batch_in_flight", 0)
        if in_flight >= 2 and not final:
            sim.batch_crashes += 1
            sim.trace.record("crash_during_batch", process.number, in_flight)
        process.storage.sever()
        for task in list(process.tasks):
            task.cancel()
        for caller in list(process.callers):
            process.crash_cancelled.add(caller)
            caller.cancel()
        self._forget_stranded(process)  # nothing of a dead process lands any more
        if not final:
            sim.crashes += 1
            sim.count(coverage.PROCESS_CRASH)
        sim.trace.record("crash", process.number, sim.invocations)
        if replace:
            self.processes[process.slot] = self.start(process.slot)

    async def restart_all(self) -> None:
        """The end of the run: close or crash every process, then start one fresh process."""
        for process in list(self.processes):
            if self.crash_rng.random() < 0.5:
                self.crash(process, final=True, replace=False)
            else:
                await process.runtime.close()
                process.dead = True  # drained: nothing it started can land any more
                self._forget_stranded(process)
        self.processes = [self.start(0)]

    def _forget_stranded(self, process: Process) -> None:
        for actor in process.stranded:
            self.sim.window.finish(actor)
        process.stranded.clear()

    def _batch_started(self, process: Process, size: int, wait: float) -> None:
        """A batch is being written: it may fail whole (``batch_fail``) or crash its process.

        The process crashes now and then (with ``crashes``) while a batch of two
        or more commits is being written.
        """
        self.sim.injector.batch_fault(size)
        if not self.sim.config.crashes or size < 2 or wait <= 0:
            return
        if self._batch_crash_budget <= 0:
            return
        if self.crash_rng.random() < BATCH_CRASH_PROBABILITY:
            self._batch_crash_budget -= 1
            delay = self.crash_rng.uniform(0.0, wait)
            asyncio.get_running_loop().call_later(delay, self._crash_if_running, process)

    def schedule_crash(self) -> None:
        delay = self.crash_rng.uniform(0.0, 0.02)
        asyncio.get_running_loop().call_later(delay, self._crash_if_running, None)

    def _crash_if_running(self, process: Process | None) -> None:
        if not self.sim.checking:
            self.crash(process)

    # -- background misfortunes ----------------------------------------------------

    def start_background(self) -> None:
        """Start the chaos/eviction watcher and the pauser, as the topology asks."""
        loop = asyncio.get_running_loop()
        # Not any process's tasks: a crash does not stop them.
        token = PROCESS.set(None)
        try:
            if self.topology.chaos:
                self.aim_at = self._chaos_rng.randint(20, 60)
            if self.topology.chaos or self.topology.idle_timeout is not None:
                self._background.append(loop.create_task(self._chaos()))
            if self.topology.pauses:
                self._background.append(loop.create_task(self._pauser()))
        finally:
            PROCESS.reset(token)

    async def stop_background(self) -> None:
        """Stop chaos and pauses; resume every paused process."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        for process in self.processes:
            if process.storage.paused:
                self._resume(process)

    async def _chaos(self) -> None:
        rng = self._chaos_rng
        chaos = self.topology.chaos
        while True:
            await asyncio.sleep(rng.uniform(0.1, 0.8))
            self._watch_evictions()
            if not chaos:
                continue
            process = rng.choice(self.processes)
            actors = process.active_actors()
            if process.dead or not actors:
                continue
            self._deactivate_now(process, rng.choice(actors))

    def aim(self, process: Process, actor: ActorId) -> None:
        """Deactivate ``actor`` in ``process`` 0-5 ms after a call on it started (busy).

        The stop then queues behind the call in flight, and the next call to
        come must wait for that activation's end: the hand-over of issue 13, bug 1.
        """
        rng = self._chaos_rng
        self.aim_at += rng.randint(20, 60)
        loop = asyncio.get_running_loop()
        loop.call_later(rng.uniform(0.0, 0.005), self._deactivate_now, process, actor)

    def _deactivate_now(self, process: Process, actor: ActorId) -> None:
        if process.dead or self.sim.checking:
            return
        self._asked[(process.number, actor)] += 1
        self.sim.count(coverage.CHAOS_DEACTIVATION)
        self.sim.trace.record("deactivate", process.number, str(actor))
        loop = asyncio.get_running_loop()
        process.context.run(loop.create_task, self._deactivate(process, actor))

    async def _deactivate(self, process: Process, actor: ActorId) -> None:
        deactivate = getattr(process.runtime, "deactivate", None)
        if deactivate is None:
            return
        try:
            await deactivate(actor)
        except Exception as exc:  # a failed final commit: the activation is dropped anyway
            self.sim.trace.record("deactivate_failed", process.number, type(exc).__name__)

    def _watch_evictions(self) -> None:
        """Count activations that ended without a deactivation being asked for.

        Also closes attempts stranded on a process once their actor has no
        mailbox there: its worker ran every queued invocation to the end.
        """
        for process in self.processes:
            now = set(process.active_actors())
            if process.stranded and not process.storage.paused:
                still = [actor for actor in process.stranded if actor in now]
                for actor in process.stranded:
                    if actor not in now:
                        self.sim.window.finish(actor)
                process.stranded = still
            before = self._seen.get(process.number)
            self._seen[process.number] = now
            if not before:
                continue
            for actor in sorted(before - now):
                key = (process.number, actor)
                if self._asked[key]:
                    self._asked[key] -= 1
                else:
                    self.sim.count(coverage.IDLE_EVICTION)

    async def _pauser(self) -> None:
        rng = self._pause_rng
        config = self.sim.config
        longest = max(self.topology.lease_seconds, config.attempt_timeout)
        loop = asyncio.get_running_loop()
        gap = (0.02, 0.3)  # the first pause comes early: a short run gets one too
        while True:
            await asyncio.sleep(rng.uniform(*gap))
            gap = (0.2, 0.8)
            process = rng.choice(self.processes)
            duration = rng.uniform(1.2, 2.0) * longest
            if process.dead or process.storage.paused:
                continue
            self.sim.count(coverage.PAUSE)
            self.sim.trace.record("pause", process.number, duration)
            process.storage.pause()
            for caller, attempt in list(process.callers.items()):
                self.arm_timeout(process, caller, attempt)
            resumed = loop.create_future()
            loop.call_later(duration, self._resume_later, process, resumed)
            await resumed  # one paused process at a time

    def _resume_later(self, process: Process, resumed: asyncio.Future[None]) -> None:
        if not resumed.done():
            resumed.set_result(None)
        if not process.dead and process.storage.paused:
            self._resume(process)

    def _resume(self, process: Process) -> None:
        process.stale = set(process.active_actors())
        self.sim.trace.record("resume", process.number, len(process.stale))
        process.storage.resume()

    def arm_timeout(self, process: Process, caller: asyncio.Task[Any], attempt: int) -> None:
        """Give up on ``attempt`` of ``caller`` at its deadline, if its process is still paused."""
        loop = asyncio.get_running_loop()
        deadline = process.started[attempt] + self.sim.config.attempt_timeout
        loop.call_at(max(deadline, loop.time()), self._time_out, process, caller, attempt)

    def _time_out(self, process: Process, caller: asyncio.Task[Any], attempt: int) -> None:
        if (
            process.storage.paused
            and not process.dead
            and process.callers.get(caller) == attempt
            and caller not in process.timed_out
        ):
            process.timed_out.add(caller)
            caller.cancel()
