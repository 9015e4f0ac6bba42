"""Fault injection as a ``Storage`` wrapper that works over any backend.

``FaultyStorage(inner, injector)`` implements the ``Storage`` protocol by
delegating to ``inner`` (memory, LMDB, Redis, a third party's) and asks its
``FaultInjector`` at every operation whether a fault fires. Over memory in a
``SimulationLoop`` everything is deterministic; over a real backend the same
faults fire with real time (latency is then a real sleep).

Operations are named ``get``, ``set``, ``delete``, ``list_keys`` (on the
storage or on a transaction) and ``commit``. A *commit point* is a
transaction's ``commit`` or a storage-level ``set``/``delete`` (each is a
one-write commit). The catalogue, with what each fault does:

``read_fail`` (default ops ``get``, ``list_keys``)
    raises ``StorageUnavailableError`` -- an error, never "not found".
``write_fail`` (default ops ``set``, ``delete``)
    raises ``StorageUnavailableError``; the write is not applied (nor buffered).
``crash_before_commit`` (commit points; default ``commit``)
    the commit is never sent: ``StorageUnavailableError``, nothing applied.
``crash_during_commit`` (commit points; default ``commit``)
    the connection drops while the commit is being sent, before the backend
    applied it: ``StorageUnavailableError``, nothing applied.
``crash_after_commit`` (commit points; default ``commit``)
    the commit is applied, the reply is lost: ``CommitOutcomeUnknownError``.
``latency`` (every op)
    a delay drawn from ``latency=(lo, hi)`` seconds before the op runs
    (``asyncio.sleep``: virtual in a simulation), reordering concurrent work.
``spurious_conflict`` (commit points; default ``commit``)
    ``TransactionConflictError`` and nothing applied, as if another commit had
    landed; only on transactions that read something (a write-only
    transaction never conflicts, by contract).
``outage`` (every op)
    starts a window of ``duration`` seconds during which every operation
    raises ``StorageUnavailableError`` (nothing applied).
``storage_full`` (commit points; default ``commit``)
    ``StorageFullError``, nothing applied; only on commits that write.
``lost_commit`` (commit points; default ``commit``)
    the request is lost on its way: the commit is *not* applied, and the
    caller gets ``CommitOutcomeUnknownError`` (it cannot tell this from
    ``crash_after_commit``, which applied it).
``batch_fail`` (a group-commit batch of the memory backend; op ``commit``)
    writing a whole batch fails (an fsync or pipeline error): none of its
    commits is applied and every one of them gets ``StorageUnavailableError``.
    It strikes below ``FaultyStorage``, inside the backend, so it exercises
    how the group-commit batcher routes one failure to every caller
    (``FaultInjector.batch_fault``; the simulator calls it from
    ``MemoryStorage.on_batch``).

Each ``FaultSpec`` has a probability, an operation filter, ``start_after`` (no
trigger before that many operations went through the injector) and
``max_triggers``. The injector counts how often each fault fired.
A ``FaultyStorage`` can also be ``sever``-ed: a crashed process's handle,
every later call of which fails (see ``kelpie.dst.cluster``); and ``pause``-d:
the process is frozen (a zombie in the making). While paused, every operation
of the handle blocks, and the reply of a request already sent (a commit waiting
in its batch) is held back. At ``resume`` the handle works again: blocked
writes and commits go out late -- the zombie's stale commits, which the
runtime's fence and the backend's version check must reject -- while blocked
reads fail with ``StorageUnavailableError`` (they timed out while the process
was frozen), so a frozen request never starts afresh long after its client gave
up on it. The plan side (kinds, specs, ``--faults`` syntax) is
``kelpie.dst.fault_plan``.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

from kelpie.dst.fault_plan import ALL_OPS, COMMIT_ORDER, FaultKind, FaultPlan, FaultSpec
from kelpie.dst.trace import Trace
from kelpie.errors import (
    CommitOutcomeUnknownError,
    StorageFullError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.base import BufferedTransaction, Writes, write_buffer
from kelpie.storage.protocol import Storage, Transaction
from kelpie.storage.wrapper import StorageWrapper, TransactionWrapper

__all__ = [
    "ALL_OPS",
    "FaultInjector",
    "FaultKind",
    "FaultPlan",
    "FaultSpec",
    "FaultyStorage",
    "FaultyTransaction",
    "InjectedFault",
    "InjectedLostCommitError",
]


class InjectedFault:
    """Mixin marking an exception as injected (``isinstance(exc, InjectedFault)``)."""


class InjectedUnavailableError(StorageUnavailableError, InjectedFault):
    """An injected ``StorageUnavailableError``."""


class InjectedCommitOutcomeUnknownError(CommitOutcomeUnknownError, InjectedFault):
    """An injected ``CommitOutcomeUnknownError`` (the commit *was* applied)."""


class InjectedLostCommitError(CommitOutcomeUnknownError, InjectedFault):
    """An injected ``CommitOutcomeUnknownError`` for a commit that was *not* applied."""


class InjectedConflictError(TransactionConflictError, InjectedFault):
    """An injected ``TransactionConflictError``."""


class InjectedStorageFullError(StorageFullError, InjectedFault):
    """An injected ``StorageFullError``."""


@dataclass
class _Armed:
    """A spec and how often it fired (for ``max_triggers``)."""

    spec: FaultSpec
    fired: int = 0


@dataclass
class FaultInjector:
    """Decides, from its own random stream, which faults fire; counts what fired.

    Shared by every ``FaultyStorage`` of a run (one per simulated process), so
    counters and outage windows span process crashes. ``enabled = False``
    turns every fault off (the final, fault-free check of a simulation).
    """

    plan: FaultPlan
    rng: random.Random
    trace: Trace | None = None
    enabled: bool = True
    ops_seen: int = 0
    fired: Counter[str] = field(default_factory=Counter)
    outage_rejections: int = 0
    _outage_until: float = -1.0

    def __post_init__(self) -> None:
        # (kind, op) -> the armed specs that may fire there: the hot path is one lookup.
        self._candidates: dict[tuple[FaultKind, str], list[_Armed]] = {}
        for spec in self.plan.specs:
            if spec.probability > 0:
                armed = _Armed(spec)
                for op in sorted(spec.effective_ops):
                    self._candidates.setdefault((spec.kind, op), []).append(armed)
        self._has_outage = any(s.kind is FaultKind.OUTAGE for s in self.plan.specs)
        self._latency: dict[str, list[_Armed]] = {
            op: armed for (kind, op), armed in self._candidates.items() if kind is FaultKind.LATENCY
        }
        # op -> what may strike before it runs (outage first), all decided by one draw.
        self._before: dict[str, list[_Armed]] = {}
        for kind in (FaultKind.OUTAGE, FaultKind.READ_FAIL, FaultKind.WRITE_FAIL):
            for (k, op), specs in sorted(self._candidates.items()):
                if k is kind:
                    self._before.setdefault(op, []).extend(specs)
        self._commit: dict[tuple[str, bool, bool], list[_Armed]] = {}

    @property
    def configured(self) -> list[str]:
        """Kinds configured with a non-zero probability, sorted."""
        return sorted({str(s.kind) for s in self.plan.specs if s.probability > 0})

    def never_fired(self) -> list[str]:
        return [kind for kind in self.configured if self.fired[kind] == 0]

    def _pick(self, candidates: list[_Armed]) -> FaultSpec | None:
        """One draw decides which of ``candidates`` fires, if any.

        Each eligible spec owns a slice of [0, 1) as wide as its probability, in
        order, so each fires with its own probability and at most one fires.
        """
        u = self.rng.random()
        bound = 0.0
        seen = self.ops_seen
        for armed in candidates:
            spec = armed.spec
            if seen <= spec.start_after:
                continue
            if spec.max_triggers is not None and armed.fired >= spec.max_triggers:
                continue
            bound += spec.probability
            if u < bound:
                armed.fired += 1
                self.fired[spec.kind] += 1
                return spec
        return None

    def _note(self, kind: FaultKind, op: str, actor: ActorId) -> None:
        if self.trace is not None:
            self.trace.record("fault", str(kind), op, str(actor))

    def latency(self, op: str, actor: ActorId) -> float:
        """Count the operation; the delay to inject before it (0.0 for none)."""
        self.ops_seen += 1
        if not self.enabled:
            return 0.0
        candidates = self._latency.get(op)
        if candidates is None:
            return 0.0
        spec = self._pick(candidates)
        if spec is None:
            return 0.0
        self._note(FaultKind.LATENCY, op, actor)
        return self.rng.uniform(*spec.latency)

    def check(self, op: str, actor: ActorId) -> None:
        """Raise the fault that strikes the operation now, if any: outage, read/write failure."""
        if not self.enabled:
            return
        now = 0.0
        if self._has_outage:
            now = asyncio.get_running_loop().time()
            if now < self._outage_until:
                self.outage_rejections += 1
                raise InjectedUnavailableError(
                    f"injected outage: storage unreachable ({op} {actor})"
                )
        candidates = self._before.get(op)
        if candidates is None:
            return
        spec = self._pick(candidates)
        if spec is None:
            return
        kind = spec.kind
        self._note(kind, op, actor)
        if kind is FaultKind.OUTAGE:
            self._outage_until = now + spec.duration
            self.outage_rejections += 1
            raise InjectedUnavailableError(f"injected outage: storage unreachable ({op} {actor})")
        what = "read" if kind is FaultKind.READ_FAIL else "write"
        raise InjectedUnavailableError(f"injected {what} failure ({op} {actor})")

    async def before(self, op: str, actor: ActorId) -> None:
        """Everything that strikes before an operation: latency, then ``check``."""
        delay = self.latency(op, actor)
        if delay:
            await asyncio.sleep(delay)
        self.check(op, actor)

    def batch_fault(self, size: int) -> None:
        """Raise if writing a group-commit batch of ``size`` commits fails as a whole."""
        if not self.enabled:
            return
        candidates = self._candidates.get((FaultKind.BATCH_FAIL, "commit"))
        if candidates is None or self._pick(candidates) is None:
            return
        if self.trace is not None:
            self.trace.record("fault", str(FaultKind.BATCH_FAIL), "commit", size)
        raise InjectedUnavailableError(
            f"injected batch failure: writing a batch of {size} commits failed; none applied"
        )

    def commit_fault(self, op: str, actor: ActorId, *, read: bool, wrote: bool) -> FaultKind | None:
        """The commit-point fault that fires now, if any (recorded and counted).

        One draw over the kinds in ``COMMIT_ORDER`` that apply: a spurious
        conflict only to a transaction that read, storage full only to a
        commit that writes.
        """
        if not self.enabled or not self._candidates:
            return None
        candidates = self._commit.get((op, read, wrote))
        if candidates is None:
            candidates = self._commit[(op, read, wrote)] = [
                armed
                for kind in COMMIT_ORDER
                if (read or kind is not FaultKind.SPURIOUS_CONFLICT)
                and (wrote or kind is not FaultKind.STORAGE_FULL)
                for armed in self._candidates.get((kind, op), ())
            ]
        if not candidates:
            return None
        spec = self._pick(candidates)
        if spec is None:
            return None
        self._note(spec.kind, op, actor)
        return spec.kind


def _severed(storage: FaultyStorage, op: str, actor: ActorId) -> InjectedUnavailableError:
    return InjectedUnavailableError(
        f"{op} on {actor} from {storage.name}, whose process crashed: it can no longer "
        "reach the storage"
    )


_READS = frozenset({"get", "list_keys"})


async def _run_commit(op: str, actor: ActorId, kind: FaultKind | None) -> bool:
    """Raise the error of a pre-commit ``kind``; return whether to lose the reply after."""
    if kind is None:
        return False
    if kind is FaultKind.CRASH_BEFORE_COMMIT:
        raise InjectedUnavailableError(f"injected crash before commit ({op} {actor}): not applied")
    if kind is FaultKind.SPURIOUS_CONFLICT:
        raise InjectedConflictError(f"injected conflict ({op} {actor}): not applied")
    if kind is FaultKind.STORAGE_FULL:
        raise InjectedStorageFullError(f"injected storage full ({op} {actor}): not applied")
    if kind is FaultKind.CRASH_DURING_COMMIT:
        await asyncio.sleep(0)  # the request was on its way when the connection dropped
        raise InjectedUnavailableError(
            f"injected crash during commit ({op} {actor}): connection lost, not applied"
        )
    if kind is FaultKind.LOST_COMMIT:
        await asyncio.sleep(0)  # sent, and lost on the way
        raise InjectedLostCommitError(
            f"injected lost request ({op} {actor}): not applied, outcome unknown to the caller"
        )
    return kind is FaultKind.CRASH_AFTER_COMMIT


class FaultyTransaction(TransactionWrapper):
    """Delegates to the inner transaction; faults strike at each op and at commit.

    Abort and the ``async with`` lifecycle are ``TransactionWrapper``'s.
    """

    def __init__(self, storage: FaultyStorage, actor: ActorId, inner: Transaction) -> None:
        super().__init__(inner)
        self._storage = storage
        self._actor = actor
        self._read = False
        self._wrote = False
        self._epoch = storage.pauses

    def _check(self, op: str) -> float:
        """Before ``op``: refuse it if the process crashed; the latency to inject.

        ``-1.0`` means the process is paused: ``FaultyStorage.wait`` blocks.
        """
        storage = self._storage
        if storage.held:
            if storage.severed:
                raise _severed(storage, op, self._actor)
            return -1.0
        return storage.injector.latency(op, self._actor)

    def _strike(self, op: str) -> None:
        """Right before ``op`` runs (after any latency): crash, outage, failures."""
        storage = self._storage
        if storage.severed:
            raise _severed(storage, op, self._actor)
        storage.injector.check(op, self._actor)

    # Each op: _check, an optional wait, _strike -- no extra coroutine on the hot path.

    async def get(self, key: bytes) -> bytes | None:
        delay = self._check("get")
        if delay:
            await self._storage.wait(delay, "get", self._actor)
        self._strike("get")
        self._read = True
        return await self.inner.get(key)

    async def set(self, key: bytes, value: bytes) -> None:
        delay = self._check("set")
        if delay:
            await self._storage.wait(delay, "set", self._actor)
        self._strike("set")
        await self.inner.set(key, value)
        self._wrote = True

    async def delete(self, key: bytes) -> None:
        delay = self._check("delete")
        if delay:
            await self._storage.wait(delay, "delete", self._actor)
        self._strike("delete")
        await self.inner.delete(key)
        self._wrote = True

    async def list_keys(self, prefix: bytes = b"") -> list[bytes]:
        delay = self._check("list_keys")
        if delay:
            await self._storage.wait(delay, "list_keys", self._actor)
        self._strike("list_keys")
        self._read = True
        return await self.inner.list_keys(prefix)

    async def commit(self) -> None:
        if self.ended:
            await self.inner.commit()  # raises TransactionClosedError
            return
        storage = self._storage
        try:
            delay = self._check("commit")
            if delay:
                await storage.wait(delay, "commit", self._actor)
            self._strike("commit")
            kind = storage.injector.commit_fault(
                "commit", self._actor, read=self._read, wrote=self._wrote
            )
            lose_reply = await _run_commit("commit", self._actor, kind)
        except BaseException:
            await self.abort()
            raise
        try:
            await super().commit()
        except TransactionConflictError as exc:
            storage.note_conflict(exc, self._epoch)
            raise
        finally:
            if storage.held:
                await storage.hold_reply()
        if lose_reply:
            raise InjectedCommitOutcomeUnknownError(
                f"injected crash after commit (commit {self._actor}): applied, reply lost"
            )


class BufferingFaultyTransaction(FaultyTransaction):
    """A ``FaultyTransaction`` that buffers writes as kelpie's own transactions do.

    The runtime writes into a ``BufferedTransaction`` without a coroutine
    (``buffer_set``, ``write_buffer``): no fault can strike there, none does
    in production, and the commit carries them. A simulated process gets this
    kind or the other (``FaultyStorage(buffered=...)``), so both of the
    runtime's write paths run under faults.
    """

    _plain_writes = True

    def buffer_set(self, key: bytes, value: bytes) -> None:
        self._inner_buffered().buffer_set(key, value)
        self._wrote = True

    def buffer_delete(self, key: bytes) -> None:
        self._inner_buffered().buffer_delete(key)
        self._wrote = True

    def _write_buffer(self) -> Writes | None:
        writes = write_buffer(self.inner)
        if writes is not None:
            self._wrote = True  # asked for to write into it
        return writes

    def _inner_buffered(self) -> BufferedTransaction:
        inner = self.inner
        assert isinstance(inner, BufferedTransaction), "buffered=True needs kelpie's own store"
        return inner


class FaultyStorage(StorageWrapper):
    """A ``Storage`` that delegates to ``inner`` and injects ``injector``'s faults.

    ``sever()`` models the process that holds this handle crashing: every later
    call (and every open transaction's next call) raises
    ``StorageUnavailableError`` and reaches nothing. ``pause()`` freezes the
    handle until ``resume()`` (see the module docstring). ``close()`` closes
    ``inner``.
    """

    def __init__(
        self,
        inner: Storage,
        injector: FaultInjector,
        *,
        name: str = "process",
        buffered: bool = False,
    ) -> None:
        super().__init__(inner)
        self.injector = injector
        self.name = name
        self.buffered = buffered
        """Transactions buffer writes without a coroutine, as kelpie's own do
        (``BufferingFaultyTransaction``; the inner store must be kelpie's own)."""
        self.severed = False
        self.held = False
        """Severed or paused: the ops' slow path."""
        self.pauses = 0
        """How many pauses began on this handle."""
        self.conflicts = 0
        """Commits the backend's version check rejected (real conflicts, not injected)."""
        self.zombie_conflicts = 0
        """Of those, commits of transactions begun before a pause ended."""
        self._resumed: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"FaultyStorage({self.inner!r}, name={self.name!r})"

    @property
    def paused(self) -> bool:
        return self._resumed is not None

    def sever(self) -> None:
        self.severed = True
        self.held = True
        self._wake()

    def pause(self) -> None:
        """Freeze the handle: every operation blocks until ``resume``."""
        if self._resumed is None and not self.severed:
            self._resumed = asyncio.get_running_loop().create_future()
            self.held = True
            self.pauses += 1

    def resume(self) -> None:
        """Unfreeze: blocked writes go out, blocked reads fail (they timed out)."""
        self._wake()
        self.held = self.severed

    def _wake(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)

    def note_conflict(self, exc: TransactionConflictError, epoch: int) -> None:
        """Count a commit the backend refused; ``epoch``: pauses when its transaction began."""
        if isinstance(exc, InjectedFault):
            return
        self.conflicts += 1
        if epoch != self.pauses:
            self.zombie_conflicts += 1
            exc.zombie = True  # type: ignore[attr-defined]  # counted here, not by the harness

    async def hold_reply(self) -> None:
        """A reply that arrives while the handle is paused waits for the resume."""
        while self._resumed is not None:
            await asyncio.shield(self._resumed)

    async def wait(self, delay: float, op: str, actor: ActorId) -> None:
        """Inject ``delay`` (``> 0``), then block while the handle is paused (see ``pause``)."""
        if delay > 0:
            await asyncio.sleep(delay)
        blocked = False
        while self._resumed is not None:
            blocked = True
            await asyncio.shield(self._resumed)
        if self.severed:
            raise _severed(self, op, actor)
        if blocked and op in _READS:
            raise InjectedUnavailableError(
                f"{op} on {actor} from {self.name} timed out while its process was frozen"
            )

    async def _before(self, op: str, actor: ActorId) -> None:
        if self.held:
            await self.wait(0.0, op, actor)
        delay = self.injector.latency(op, actor)
        if delay:
            await self.wait(delay, op, actor)
        self.injector.check(op, actor)

    async def get(self, actor: ActorId, key: bytes) -> bytes | None:
        await self._before("get", actor)
        return await self.inner.get(actor, key)

    async def list_keys(self, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        await self._before("list_keys", actor)
        return await self.inner.list_keys(actor, prefix)

    async def set(self, actor: ActorId, key: bytes, value: bytes) -> None:
        await self._before("set", actor)
        kind = self.injector.commit_fault("set", actor, read=False, wrote=True)
        lose_reply = await _run_commit("set", actor, kind)
        await self.inner.set(actor, key, value)
        if lose_reply:
            raise InjectedCommitOutcomeUnknownError(
                f"injected crash after commit (set {actor}): applied, reply lost"
            )

    async def delete(self, actor: ActorId, key: bytes) -> None:
        await self._before("delete", actor)
        kind = self.injector.commit_fault("delete", actor, read=False, wrote=True)
        lose_reply = await _run_commit("delete", actor, kind)
        await self.inner.delete(actor, key)
        if lose_reply:
            raise InjectedCommitOutcomeUnknownError(
                f"injected crash after commit (delete {actor}): applied, reply lost"
            )

    def transaction(self, actor: ActorId) -> FaultyTransaction:
        if self.severed:
            raise _severed(self, "transaction", actor)
        kind = BufferingFaultyTransaction if self.buffered else FaultyTransaction
        return kind(self, actor, self.inner.transaction(actor))
