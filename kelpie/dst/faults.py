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

Each ``FaultSpec`` has a probability, an operation filter, ``start_after`` (no
trigger before that many operations went through the injector) and
``max_triggers``. The injector counts how often each fault fired.
A ``FaultyStorage`` can also be ``sever``-ed: a crashed process's handle,
every later call of which fails (see ``kelpie.dst.harness``).
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections import Counter
from dataclasses import dataclass, field, replace

from kelpie.actor.id import ActorId
from kelpie.dst.trace import Trace
from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    StorageFullError,
    StorageUnavailableError,
    TransactionConflictError,
)
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
]

ALL_OPS = frozenset({"get", "set", "delete", "list_keys", "commit"})


class FaultKind(enum.StrEnum):
    """The fault catalogue (see the module docstring for each one's semantics)."""

    READ_FAIL = "read_fail"
    WRITE_FAIL = "write_fail"
    CRASH_BEFORE_COMMIT = "crash_before_commit"
    CRASH_DURING_COMMIT = "crash_during_commit"
    CRASH_AFTER_COMMIT = "crash_after_commit"
    LATENCY = "latency"
    SPURIOUS_CONFLICT = "spurious_conflict"
    OUTAGE = "outage"
    STORAGE_FULL = "storage_full"


_COMMIT_KINDS = frozenset(
    {
        FaultKind.CRASH_BEFORE_COMMIT,
        FaultKind.CRASH_DURING_COMMIT,
        FaultKind.CRASH_AFTER_COMMIT,
        FaultKind.SPURIOUS_CONFLICT,
        FaultKind.STORAGE_FULL,
    }
)

_DEFAULT_OPS: dict[FaultKind, frozenset[str]] = {
    FaultKind.READ_FAIL: frozenset({"get", "list_keys"}),
    FaultKind.WRITE_FAIL: frozenset({"set", "delete"}),
    FaultKind.LATENCY: ALL_OPS,
    FaultKind.OUTAGE: ALL_OPS,
    **{kind: frozenset({"commit"}) for kind in _COMMIT_KINDS},
}

# Commit-point faults are tried in this order; the first that fires wins.
_COMMIT_ORDER = (
    FaultKind.CRASH_BEFORE_COMMIT,
    FaultKind.SPURIOUS_CONFLICT,
    FaultKind.STORAGE_FULL,
    FaultKind.CRASH_DURING_COMMIT,
    FaultKind.CRASH_AFTER_COMMIT,
)


class InjectedFault:
    """Mixin marking an exception as injected (``isinstance(exc, InjectedFault)``)."""


class InjectedUnavailableError(StorageUnavailableError, InjectedFault):
    """An injected ``StorageUnavailableError``."""


class InjectedCommitOutcomeUnknownError(CommitOutcomeUnknownError, InjectedFault):
    """An injected ``CommitOutcomeUnknownError`` (the commit *was* applied)."""


class InjectedConflictError(TransactionConflictError, InjectedFault):
    """An injected ``TransactionConflictError``."""


class InjectedStorageFullError(StorageFullError, InjectedFault):
    """An injected ``StorageFullError``."""


@dataclass(frozen=True)
class FaultSpec:
    """One configured fault: what, how likely, on which operations, when, how often."""

    kind: FaultKind
    probability: float
    ops: frozenset[str] | None = None
    """Operation filter; ``None`` means the kind's default (module docstring)."""
    start_after: int = 0
    """Never fires before this many operations went through the injector."""
    max_triggers: int | None = None
    latency: tuple[float, float] = (0.001, 0.05)
    """``latency``: the delay is uniform in [lo, hi] seconds."""
    duration: float = 0.5
    """``outage``: how long the window lasts, in seconds."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FaultKind(self.kind))
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"{self.kind}: probability must be in [0, 1], got {self.probability}")
        if self.ops is not None:
            ops = frozenset(self.ops)
            unknown = ops - ALL_OPS
            if unknown:
                raise ConfigError(
                    f"{self.kind}: unknown operation(s) {sorted(unknown)}; known: {sorted(ALL_OPS)}"
                )
            object.__setattr__(self, "ops", ops)
        if self.start_after < 0:
            raise ConfigError(f"{self.kind}: start_after must be >= 0")
        if self.max_triggers is not None and self.max_triggers < 0:
            raise ConfigError(f"{self.kind}: max_triggers must be >= 0")
        lo, hi = self.latency
        if not 0 <= lo <= hi:
            raise ConfigError(f"{self.kind}: latency must be 0 <= lo <= hi, got {self.latency}")
        if self.duration <= 0:
            raise ConfigError(f"{self.kind}: duration must be > 0")

    @property
    def effective_ops(self) -> frozenset[str]:
        return self.ops if self.ops is not None else _DEFAULT_OPS[self.kind]

    def describe(self) -> str:
        """The spec in the ``--faults`` syntax."""
        parts = [str(self.kind), f"p={self.probability:g}"]
        if self.ops is not None:
            parts.append("ops=" + "|".join(sorted(self.ops)))
        if self.start_after:
            parts.append(f"after={self.start_after}")
        if self.max_triggers is not None:
            parts.append(f"max={self.max_triggers}")
        if self.kind is FaultKind.LATENCY:
            parts.append(f"delay={self.latency[0]:g}-{self.latency[1]:g}")
        if self.kind is FaultKind.OUTAGE:
            parts.append(f"duration={self.duration:g}")
        return ":".join(parts)


_EVERYTHING: tuple[FaultSpec, ...] = (
    FaultSpec(FaultKind.READ_FAIL, 0.01),
    FaultSpec(FaultKind.WRITE_FAIL, 0.01),
    FaultSpec(FaultKind.CRASH_BEFORE_COMMIT, 0.02),
    FaultSpec(FaultKind.CRASH_DURING_COMMIT, 0.03),
    FaultSpec(FaultKind.CRASH_AFTER_COMMIT, 0.03),
    FaultSpec(FaultKind.LATENCY, 0.1),
    FaultSpec(FaultKind.SPURIOUS_CONFLICT, 0.02),
    FaultSpec(FaultKind.OUTAGE, 0.002, duration=0.3),
    FaultSpec(FaultKind.STORAGE_FULL, 0.01),
)


@dataclass(frozen=True)
class FaultPlan:
    """The faults of a run. ``FaultPlan.everything()`` enables the whole catalogue."""

    specs: tuple[FaultSpec, ...] = ()

    @classmethod
    def none(cls) -> FaultPlan:
        return cls(())

    @classmethod
    def everything(cls, scale: float = 1.0) -> FaultPlan:
        """Every fault kind, with probabilities multiplied by ``scale`` (capped at 1)."""
        return cls(
            tuple(replace(s, probability=min(1.0, s.probability * scale)) for s in _EVERYTHING)
        )

    @classmethod
    def of(cls, *specs: FaultSpec) -> FaultPlan:
        return cls(tuple(specs))

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """Parse the ``--faults`` syntax.

        ``none``, ``all`` (``all*2`` doubles every probability), or a comma-separated
        list of ``KIND[:p=P][:ops=OP|OP][:after=N][:max=N][:delay=LO-HI][:duration=S]``;
        ``all`` may be combined with specs (``all,latency:p=0.5`` overrides latency).
        """
        specs: dict[FaultKind, FaultSpec] = {}
        text = text.strip()
        if text in ("", "none"):
            return cls.none()
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            if item == "all" or item.startswith("all*"):
                try:
                    scale = float(item[4:]) if item.startswith("all*") else 1.0
                except ValueError as exc:
                    raise ConfigError(f"bad fault scale in {item!r}") from exc
                for spec in cls.everything(scale).specs:
                    specs[spec.kind] = spec
                continue
            name, *options = item.split(":")
            try:
                kind = FaultKind(name)
            except ValueError:
                raise ConfigError(
                    f"unknown fault {name!r}; known: all, none, "
                    + ", ".join(k.value for k in FaultKind)
                ) from None
            base = next(s for s in _EVERYTHING if s.kind is kind)
            spec = specs.get(kind, base)
            for option in options:
                key, sep, value = option.partition("=")
                if not sep:
                    raise ConfigError(f"fault option {option!r} in {item!r} is not KEY=VALUE")
                try:
                    if key == "p":
                        spec = replace(spec, probability=float(value))
                    elif key == "ops":
                        spec = replace(spec, ops=frozenset(value.split("|")))
                    elif key == "after":
                        spec = replace(spec, start_after=int(value))
                    elif key == "max":
                        spec = replace(spec, max_triggers=int(value))
                    elif key == "delay":
                        lo, _, hi = value.partition("-")
                        spec = replace(spec, latency=(float(lo), float(hi or lo)))
                    elif key == "duration":
                        spec = replace(spec, duration=float(value))
                    else:
                        raise ConfigError(
                            f"unknown fault option {key!r} in {item!r}; "
                            "known: p, ops, after, max, delay, duration"
                        )
                except ValueError as exc:
                    if isinstance(exc, ConfigError):
                        raise
                    raise ConfigError(f"bad value in fault option {option!r}: {exc}") from exc
            specs[kind] = spec
        return cls(tuple(specs.values()))

    def describe(self) -> str:
        """The plan in the ``--faults`` syntax (``parse(describe())`` gives it back)."""
        if self == FaultPlan.everything():
            return "all"
        return ",".join(s.describe() for s in self.specs) or "none"


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

    @property
    def configured(self) -> list[str]:
        """Kinds configured with a non-zero probability, sorted."""
        return sorted({str(s.kind) for s in self.plan.specs if s.probability > 0})

    def never_fired(self) -> list[str]:
        return [kind for kind in self.configured if self.fired[kind] == 0]

    def _fires(self, kind: FaultKind, op: str) -> FaultSpec | None:
        candidates = self._candidates.get((kind, op))
        if candidates is None:
            return None
        for armed in candidates:
            spec = armed.spec
            if self.ops_seen <= spec.start_after:
                continue
            if spec.max_triggers is not None and armed.fired >= spec.max_triggers:
                continue
            if self.rng.random() < spec.probability:
                armed.fired += 1
                self.fired[kind] += 1
                return spec
        return None

    def _note(self, kind: FaultKind, op: str, actor: ActorId) -> None:
        if self.trace is not None:
            self.trace.record("fault", str(kind), op, str(actor))

    def latency(self, op: str, actor: ActorId) -> float:
        """Count the operation; the delay to inject before it (0.0 for none)."""
        self.ops_seen += 1
        if not self.enabled or op not in self._latency:
            return 0.0
        spec = self._fires(FaultKind.LATENCY, op)
        if spec is None:
            return 0.0
        self._note(FaultKind.LATENCY, op, actor)
        return self.rng.uniform(*spec.latency)

    def check(self, op: str, actor: ActorId) -> None:
        """Raise the fault that strikes the operation now, if any: outage, read/write failure."""
        if not self.enabled or not self._candidates:
            return
        if self._has_outage:
            now = asyncio.get_running_loop().time()
            if now >= self._outage_until:
                spec = self._fires(FaultKind.OUTAGE, op)
                if spec is not None:
                    self._note(FaultKind.OUTAGE, op, actor)
                    self._outage_until = now + spec.duration
            if now < self._outage_until:
                self.outage_rejections += 1
                raise InjectedUnavailableError(
                    f"injected outage: storage unreachable ({op} {actor})"
                )
        if op == "get" or op == "list_keys":
            if self._fires(FaultKind.READ_FAIL, op) is not None:
                self._note(FaultKind.READ_FAIL, op, actor)
                raise InjectedUnavailableError(f"injected read failure ({op} {actor})")
        elif (op == "set" or op == "delete") and self._fires(FaultKind.WRITE_FAIL, op) is not None:
            self._note(FaultKind.WRITE_FAIL, op, actor)
            raise InjectedUnavailableError(f"injected write failure ({op} {actor})")

    async def before(self, op: str, actor: ActorId) -> None:
        """Everything that strikes before an operation: latency, then ``check``."""
        delay = self.latency(op, actor)
        if delay:
            await asyncio.sleep(delay)
        self.check(op, actor)

    def commit_fault(self, op: str, actor: ActorId, *, read: bool, wrote: bool) -> FaultKind | None:
        """The commit-point fault that fires now, if any (recorded and counted)."""
        if not self.enabled or not self._candidates:
            return None
        for kind in _COMMIT_ORDER:
            if kind is FaultKind.SPURIOUS_CONFLICT and not read:
                continue
            if kind is FaultKind.STORAGE_FULL and not wrote:
                continue
            if self._fires(kind, op) is not None:
                self._note(kind, op, actor)
                return kind
        return None


def _severed(storage: FaultyStorage, op: str, actor: ActorId) -> InjectedUnavailableError:
    return InjectedUnavailableError(
        f"{op} on {actor} from {storage.name}, whose process crashed: it can no longer "
        "reach the storage"
    )


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

    def _check(self, op: str) -> float:
        """Before ``op``: refuse it if the process crashed; the latency to inject."""
        storage = self._storage
        if storage.severed:
            raise _severed(storage, op, self._actor)
        return storage.injector.latency(op, self._actor)

    def _strike(self, op: str) -> None:
        """Right before ``op`` runs (after any latency): crash, outage, failures."""
        storage = self._storage
        if storage.severed:
            raise _severed(storage, op, self._actor)
        storage.injector.check(op, self._actor)

    # Each op: _check, an optional sleep, _strike -- no extra coroutine on the hot path.

    async def get(self, key: bytes) -> bytes | None:
        delay = self._check("get")
        if delay:
            await asyncio.sleep(delay)
        self._strike("get")
        self._read = True
        return await self.inner.get(key)

    async def set(self, key: bytes, value: bytes) -> None:
        delay = self._check("set")
        if delay:
            await asyncio.sleep(delay)
        self._strike("set")
        await self.inner.set(key, value)
        self._wrote = True

    async def delete(self, key: bytes) -> None:
        delay = self._check("delete")
        if delay:
            await asyncio.sleep(delay)
        self._strike("delete")
        await self.inner.delete(key)
        self._wrote = True

    async def list_keys(self, prefix: bytes = b"") -> list[bytes]:
        delay = self._check("list_keys")
        if delay:
            await asyncio.sleep(delay)
        self._strike("list_keys")
        self._read = True
        return await self.inner.list_keys(prefix)

    async def commit(self) -> None:
        if self.ended:
            await self.inner.commit()  # raises TransactionClosedError
            return
        try:
            delay = self._check("commit")
            if delay:
                await asyncio.sleep(delay)
            self._strike("commit")
            kind = self._storage.injector.commit_fault(
                "commit", self._actor, read=self._read, wrote=self._wrote
            )
            lose_reply = await _run_commit("commit", self._actor, kind)
        except BaseException:
            await self.abort()
            raise
        await super().commit()
        if lose_reply:
            raise InjectedCommitOutcomeUnknownError(
                f"injected crash after commit (commit {self._actor}): applied, reply lost"
            )


class FaultyStorage(StorageWrapper):
    """A ``Storage`` that delegates to ``inner`` and injects ``injector``'s faults.

    ``sever()`` models the process that holds this handle crashing: every later
    call (and every open transaction's next call) raises
    ``StorageUnavailableError`` and reaches nothing. ``close()`` closes ``inner``.
    """

    def __init__(self, inner: Storage, injector: FaultInjector, *, name: str = "process") -> None:
        super().__init__(inner)
        self.injector = injector
        self.name = name
        self.severed = False

    def __repr__(self) -> str:
        return f"FaultyStorage({self.inner!r}, name={self.name!r})"

    def sever(self) -> None:
        self.severed = True

    async def _before(self, op: str, actor: ActorId) -> None:
        if self.severed:
            raise _severed(self, op, actor)
        delay = self.injector.latency(op, actor)
        if delay:
            await asyncio.sleep(delay)
            if self.severed:
                raise _severed(self, op, actor)
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
        return FaultyTransaction(self, actor, self.inner.transaction(actor))
