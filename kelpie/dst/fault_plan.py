"""What faults a run injects: the catalogue (``FaultKind``), specs and plans.

``FaultSpec`` is one configured fault (kind, probability, operation filter,
``start_after``, ``max_triggers``, latency range, outage duration);
``FaultPlan`` is the set of specs of a run, with the ``--faults`` syntax
(``FaultPlan.parse`` / ``describe``). What each kind does is described in
``kelpie.dst.faults``, which injects them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from kelpie.errors import ConfigError

__all__ = ["ALL_OPS", "COMMIT_ORDER", "FaultKind", "FaultPlan", "FaultSpec"]

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
    LOST_COMMIT = "lost_commit"
    BATCH_FAIL = "batch_fail"


_COMMIT_KINDS = frozenset(
    {
        FaultKind.CRASH_BEFORE_COMMIT,
        FaultKind.CRASH_DURING_COMMIT,
        FaultKind.CRASH_AFTER_COMMIT,
        FaultKind.SPURIOUS_CONFLICT,
        FaultKind.STORAGE_FULL,
        FaultKind.LOST_COMMIT,
    }
)

_DEFAULT_OPS: dict[FaultKind, frozenset[str]] = {
    FaultKind.READ_FAIL: frozenset({"get", "list_keys"}),
    FaultKind.WRITE_FAIL: frozenset({"set", "delete"}),
    FaultKind.LATENCY: ALL_OPS,
    FaultKind.OUTAGE: ALL_OPS,
    FaultKind.BATCH_FAIL: frozenset({"commit"}),
    **{kind: frozenset({"commit"}) for kind in _COMMIT_KINDS},
}

COMMIT_ORDER = (
    FaultKind.CRASH_BEFORE_COMMIT,
    FaultKind.SPURIOUS_CONFLICT,
    FaultKind.STORAGE_FULL,
    FaultKind.CRASH_DURING_COMMIT,
    FaultKind.LOST_COMMIT,
    FaultKind.CRASH_AFTER_COMMIT,
)
"""Commit-point faults are tried in this order; the first that fires wins."""


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
    FaultSpec(FaultKind.LOST_COMMIT, 0.02),
    FaultSpec(FaultKind.BATCH_FAIL, 0.02),
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
