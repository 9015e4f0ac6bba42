"""``Simulation``: what a workload sees of one seed's run (``kelpie.dst.harness``).

It invokes actors through the seed's simulated processes (``kelpie.dst.cluster``)
with retries a client would make, records every invocation, result and fault
in the trace and the history recorder, counts the paths the run took
(``kelpie.dst.coverage``) and collects violations. ``run_seed`` in
``kelpie.dst.harness`` builds one and runs it.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import secrets
from collections import Counter
from typing import Any

from kelpie.actor.actor import Actor
from kelpie.dst import coverage
from kelpie.dst.client import KeyWindow
from kelpie.dst.cluster import Cluster, Topology
from kelpie.dst.config import MAX_KEPT_VIOLATIONS, Outcome, SimConfig
from kelpie.dst.exclusive import watched
from kelpie.dst.faults import FaultInjector, InjectedFault
from kelpie.dst.process import (
    PROCESS,
    RUNTIMES,
    AttemptTimeoutError,
    Process,
    ProcessCrashedError,
)
from kelpie.dst.recorder import HistoryRecorder
from kelpie.dst.rng import SimRandom
from kelpie.dst.trace import Trace
from kelpie.dst.workload import Workload
from kelpie.errors import (
    ActorActiveElsewhereError,
    CorruptStateError,
    InvocationTimeoutError,
    KelpieError,
    MailboxFullError,
    RuntimeClosedError,
    StorageError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.memory import MemoryStorage
from kelpie.storage.protocol import Storage

__all__ = ["CLIENT", "Simulation"]


CLIENT: contextvars.ContextVar[int] = contextvars.ContextVar("kelpie_dst_client", default=-1)
"""The number of the client whose step is running (-1 outside the clients: setup, checks)."""

# What a client may retry: transient storage trouble, a crashed or unresponsive process.
_RETRYABLE: tuple[type[BaseException], ...] = (
    StorageError,
    InvocationTimeoutError,
    MailboxFullError,
    RuntimeClosedError,
    ProcessCrashedError,
)

_NOWHERE: frozenset[int] = frozenset()


def _recorder_for(config: SimConfig, workload: Workload) -> HistoryRecorder | None:
    """A ``HistoryRecorder`` if histories are checked and the workload has models."""
    if not config.history or not getattr(workload, "models", None):
        return None
    return HistoryRecorder()


class Simulation:
    """What a workload sees: invoke actors, draw randomness, record, count, report."""

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
        self.coverage: Counter[str] = Counter()
        self.registrations: list[tuple[str, type[Actor[Any]]]] = []
        self.checking = False
        """The clients are done: faults off, no more crashes, the checks run."""
        self.window = KeyWindow(config.idempotency_window)
        self.recorder = _recorder_for(config, workload)
        self.topology = Topology.draw(config, self.kind)
        self._in_flight: dict[ActorId, int] = {}
        self._checked_at: dict[ActorId, int] = {}
        """Per actor: its commit count at its last ``check_actor``."""
        self._id_prefix = "" if deterministic else f"run{secrets.token_hex(4)}-"
        self._route_rng = self.random.stream("routing")
        self._crash_points: set[int] = set()
        self.trace.record("topology", self.topology.describe())
        self.cluster = Cluster(self, self.topology)

    # -- for workloads ---------------------------------------------------------

    @property
    def now(self) -> float:
        """The loop's time (virtual in a simulation)."""
        return asyncio.get_running_loop().time()

    def actor(self, namespace: str, id: str) -> ActorId:
        """An ``ActorId`` private to this run (unique per run over a shared real store)."""
        return ActorId(namespace, self._id_prefix + id)

    def register(self, namespace: str, actor_cls: type[Actor[Any]]) -> None:
        """Register an actor type with every process, now and later.

        With a cluster-capable runtime the class is registered ``watched``: two
        of its handlers running at once in one process for one actor is a violation.
        """
        if self.kind.cluster:
            actor_cls = watched(actor_cls)
        self.registrations.append((namespace, actor_cls))
        for process in self.cluster.processes:
            process.runtime.register(namespace, actor_cls)

    def violation(self, message: str) -> None:
        """Report a broken invariant (recorded in the trace and the result)."""
        self.trace.record("violation", message)
        self.violation_count += 1
        if len(self.violations) < MAX_KEPT_VIOLATIONS:
            self.violations.append(message)

    def count(self, path: str, n: int = 1) -> None:
        """Count a coverage path (``kelpie.dst.coverage``); storms sum them."""
        self.coverage[path] += n

    async def state(self, actor: ActorId, state_type: type[Any]) -> Any | None:
        """The actor's committed state, read from storage behind the runtime's back."""
        return await self.kind.inspector.state(self.storage, actor, state_type)

    async def kv(self, actor: ActorId, key: bytes) -> bytes | None:
        """The actor's committed value of ``key``, read from storage directly."""
        return await self.kind.inspector.kv(self.storage, actor, key)

    async def kv_keys(self, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        return await self.kind.inspector.kv_keys(self.storage, actor, prefix)

    @property
    def processes(self) -> list[Process]:
        """The live process in each slot of the topology."""
        return self.cluster.processes

    def crash(self, process: int | None = None, *, final: bool = False) -> None:
        """Kill a process (slot ``process``, default: a random one) and start a fresh one."""
        self.cluster.crash(
            None if process is None else self.cluster.processes[process], final=final
        )

    async def invoke(
        self,
        actor: ActorId,
        operation: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        process: int | None = None,
    ) -> Any:
        """One attempt, on slot ``process`` (default: a random one); may raise anything.

        A crash of the process mid-call raises ``ProcessCrashedError``; a pause
        that outlasts ``config.attempt_timeout`` raises ``AttemptTimeoutError``.
        """
        cluster = self.cluster
        target = (
            cluster.route(self._route_rng, None, set())
            if process is None
            else cluster.processes[process]
        )
        return await self._attempt(target, actor, operation, payload, idempotency_key)

    async def _attempt(
        self, process: Process, actor: ActorId, operation: str, payload: Any, key: str | None
    ) -> Any:
        self.invocations += 1
        number = self.invocations
        now = asyncio.get_running_loop().time()
        self.trace.record("invoke", number, now, process.number, str(actor), operation, payload)
        if number in self._crash_points:
            self.cluster.schedule_crash()
        if number == self.cluster.aim_at:
            self.cluster.aim(process, actor)
        self._in_flight[actor] = self._in_flight.get(actor, 0) + 1
        if key is not None:
            self.window.start(actor, key)
        # The call runs in this client task, marked as the process's for its
        # duration: every task the runtime starts meanwhile belongs to the process.
        caller = asyncio.current_task()
        assert caller is not None
        token = PROCESS.set(process)
        process.callers[caller] = number
        process.started[number] = now
        if process.storage.paused:
            self.cluster.arm_timeout(process, caller, number)
        finished = True
        try:
            try:
                result = await process.runtime.invoke(
                    actor, operation, payload, idempotency_key=key
                )
            except BaseException as error:
                if caller in process.crash_cancelled:
                    raise self._crashed(caller, process, number) from None
                if caller in process.timed_out:
                    finished = False
                    raise self._timed_out(caller, process, number) from None
                if not isinstance(error, asyncio.CancelledError):
                    self.trace.record("error", number, type(error).__name__)
                    self._note_error(error, process, actor)
                raise
            if caller in process.crash_cancelled:  # the reply died with the process
                raise self._crashed(caller, process, number)
            if caller in process.timed_out:  # the reply came as the client gave up
                raise self._timed_out(caller, process, number)
            self.trace.record("result", number, result)
            return result
        finally:
            PROCESS.reset(token)
            del process.callers[caller]
            del process.started[number]
            if key is not None:
                if finished:
                    self.window.finish(actor)
                else:  # it may still land: open until the process dies
                    process.stranded.append(actor)
            left = self._in_flight[actor] - 1
            if left:
                self._in_flight[actor] = left
            else:
                del self._in_flight[actor]
                if not self.checking and self._changed_since_checked(actor):
                    await self.workload.check_actor(self, actor)

    def _changed_since_checked(self, actor: ActorId) -> bool:
        """Whether a commit landed on ``actor`` since its last quiet-moment check.

        ``check_actor`` reads only storage, so on an unchanged actor it would
        find what it found last time. Only the memory store counts its commits;
        over another backend the check always runs.
        """
        storage = self.storage
        if not isinstance(storage, MemoryStorage):
            return True
        commits = storage.commits_on(actor)
        if self._checked_at.get(actor) == commits:
            return False
        self._checked_at[actor] = commits
        return True

    def _note_error(self, error: BaseException, process: Process, actor: ActorId) -> None:
        if _real_conflict(error):
            self.count(coverage.CONFLICT)
            if actor in process.stale:
                process.stale.discard(actor)
                if not getattr(error, "zombie", False):  # else the storage counted it
                    self.count(coverage.ZOMBIE_REJECTED)
        elif isinstance(error, ActorActiveElsewhereError):
            self.count(coverage.LEASE_REDIRECT)
            if _real_conflict(error.__cause__):
                # A takeover that lost to the owner's renewal or to another node's
                # takeover: a real conflict, which the runtime answers with the owner.
                self.count(coverage.CONFLICT)

    def _crashed(
        self, caller: asyncio.Task[Any], process: Process, number: int
    ) -> ProcessCrashedError:
        process.crash_cancelled.discard(caller)
        if caller.cancelling():
            caller.uncancel()
        self.trace.record("crashed", number)
        return ProcessCrashedError(f"process {process.number} crashed during the call")

    def _timed_out(
        self, caller: asyncio.Task[Any], process: Process, number: int
    ) -> AttemptTimeoutError:
        process.timed_out.discard(caller)
        if caller.cancelling():
            caller.uncancel()
        self.trace.record("timed_out", number)
        self.count(coverage.ATTEMPT_TIMEOUT)
        return AttemptTimeoutError(
            f"process {process.number} did not answer within {self.config.attempt_timeout} s"
        )

    async def call(
        self,
        actor: ActorId,
        operation: str,
        payload: Any = None,
        *,
        key: str | None,
        rng: random.Random,
        attempts: int | None = None,
    ) -> Outcome:
        """Invoke as a client would: one logical call, recorded in the history.

        With ``key``: retries (same key, seeded back-off, another process after a
        timeout, the owner after a lease redirect) on storage errors --
        including ``CommitOutcomeUnknownError`` -- timeouts and process
        crashes, but never once the key may have left the idempotency window
        (``KeyWindow``). ``key=None``: exactly one attempt, no idempotency key.
        An exception raised by the handler itself is a definitive ``rejected``
        (unless an abandoned attempt may still land: then ``gave_up``). After
        ``attempts`` tries the client gives up: the outcome is unknown.
        """
        recorder = self.recorder
        if recorder is None:
            return await self._call(actor, operation, payload, key, rng, attempts)
        loop = asyncio.get_running_loop()
        handle = recorder.begin(actor, operation, payload, CLIENT.get(), loop.time(), key=key)
        try:
            outcome = await self._call(actor, operation, payload, key, rng, attempts)
        except BaseException:
            recorder.unknown(handle)
            raise
        if outcome.status == "ok":
            recorder.ok(handle, outcome.result, loop.time())
        elif outcome.status == "rejected":
            assert outcome.error is not None
            recorder.rejected(handle, outcome.error, loop.time())
        else:
            recorder.unknown(handle)
        return outcome

    async def _call(
        self,
        actor: ActorId,
        operation: str,
        payload: Any,
        key: str | None,
        rng: random.Random,
        attempts: int | None,
    ) -> Outcome:
        limit = attempts if attempts is not None else self.config.attempts
        if key is None:
            limit = 1
        cluster = self.cluster
        last: BaseException | None = None
        prefer: Process | None = None
        avoid: set[int] = set()
        stranded = False
        attempt = 0
        while attempt < limit:
            attempt += 1
            if attempt > 1 and key is not None and not self.window.may_retry(actor, key):
                self.count(coverage.GAVE_UP_WINDOW)
                break
            process = (
                cluster.route(rng, prefer, avoid)
                if len(cluster.processes) > 1
                else (cluster.processes[0])
            )
            prefer = None
            try:
                result = await self._attempt(process, actor, operation, payload, key)
            except CorruptStateError:
                raise
            except ActorActiveElsewhereError as exc:
                last = exc
                owner = cluster.owner(exc.owner)
                if owner is not None and cluster.answering(owner, avoid):
                    prefer = owner
                else:  # the owner is dead or not answering: its lease must run out first
                    prefer = process
                    await asyncio.sleep(self.topology.lease_seconds + rng.uniform(0.001, 0.02))
                continue
            except AttemptTimeoutError as exc:
                last = exc
                stranded = True
                avoid.add(process.slot)
                cluster.suspect(process)
                continue
            except _RETRYABLE as exc:
                last = exc
                await asyncio.sleep(rng.uniform(0.001, 0.02) * attempt)
                continue
            except KelpieError:
                raise
            except Exception as exc:
                self.count(coverage.HANDLER_REJECTION)
                if stranded:  # an abandoned attempt may still land: nothing is certain
                    last = exc
                    break
                return Outcome("rejected", error=exc, attempts=attempt)
            self.acknowledged += 1
            return Outcome("ok", result=result, attempts=attempt)
        self.gave_up += 1
        self.trace.record("gave_up", str(actor), operation, key)
        return Outcome("gave_up", error=last, attempts=attempt)

    # -- the run -----------------------------------------------------------------

    async def run(self) -> None:
        config = self.config
        cluster = self.cluster
        if config.crashes and config.max_crashes > 0:
            rng = cluster.crash_rng
            expected = max(1, config.clients * config.steps)
            count = rng.randint(1, config.max_crashes)
            self._crash_points = {rng.randint(1, expected) for _ in range(count)}
        await self.workload.setup(self)
        cluster.start_background()
        streams = [self.random.stream(f"client/{c}") for c in range(config.clients)]

        async def client(number: int) -> None:
            CLIENT.set(number)
            for _ in range(config.steps):
                await self.workload.step(self, number, streams[number])

        await asyncio.gather(*(client(c) for c in range(config.clients)))
        # The end: no more chaos, faults off, every process closed or crashed, one fresh one.
        self.checking = True
        await cluster.stop_background()
        self.injector.enabled = False
        self.trace.record("quiesce", self.invocations)
        await cluster.restart_all()
        await self.workload.check(self)
        for invariant in config.invariants:
            await invariant(self)
        for process in cluster.processes:
            await process.runtime.close()
        await self._count_stored()
        if self.recorder is not None:
            models = getattr(self.workload, "models", {})
            for message in self.recorder.check(models):
                self.violation(message)
            self.count(coverage.HISTORY_OPERATIONS, self.recorder.operations)
            self.count(coverage.HISTORY_EXHAUSTED, self.recorder.exhausted)

    async def _count_stored(self) -> None:
        """Coverage only the stored records and the storage handles can tell."""
        window = self.config.idempotency_window
        counter = getattr(self.kind.inspector, "idempotency_count", None)
        if counter is not None:
            for actor in sorted(self.window.actors(), key=str):
                self.count(
                    coverage.IDEMPOTENCY_EVICTION,
                    max(0, await counter(self.storage, actor) - window),
                )
        everyone = self.cluster.everyone
        self.count(coverage.VERSION_CONFLICT, sum(p.storage.conflicts for p in everyone))
        self.count(coverage.ZOMBIE_REJECTED, sum(p.storage.zombie_conflicts for p in everyone))
        self.count(coverage.UNKNOWN_NOT_APPLIED, self.injector.fired.get("lost_commit", 0))


def _real_conflict(error: BaseException | None) -> bool:
    """A ``TransactionConflictError`` the store raised (a fence or version check), not injected."""
    return isinstance(error, TransactionConflictError) and not isinstance(error, InjectedFault)
