"""A storm: many seeds of one workload, and a summary a person can act on.

``run_storm(seeds, config, workload)`` runs every seed (each fully
independent), counts invocations, faults fired by type and coverage paths
taken, lists the configured faults that never fired and the required paths
never taken (either proves nothing: a storm of ``coverage.MIN_SEEDS`` seeds
or more fails on a required path never taken), and turns each failing seed
into what replays it (``kelpie.dst.replay``): a ``kelpie dst`` command for a
built-in workload, the Python call ``run_seed(...)`` for a workload of your own.
Every count in the summary is written with thousands separators.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kelpie.dst import coverage
from kelpie.dst.fault_plan import FaultKind
from kelpie.dst.harness import SeedResult, SimConfig, Workload, run_seed
from kelpie.dst.replay import replay_commands, replays_in_python
from kelpie.dst.workloads import WORKLOADS

__all__ = ["StormResult", "replay_commands", "run_storm"]


@dataclass
class StormResult:
    """Everything a storm learned."""

    workload: str
    config: SimConfig
    results: list[SeedResult] = field(default_factory=list)
    wall_time: float = 0.0
    factory: Callable[[], Workload] | None = None
    """The workload's factory when ``run_storm`` was given one (its replays name it)."""

    @property
    def seeds(self) -> int:
        return len(self.results)

    @property
    def invocations(self) -> int:
        return sum(r.invocations for r in self.results)

    @property
    def invocations_per_second(self) -> float:
        return self.invocations / self.wall_time if self.wall_time > 0 else 0.0

    @property
    def faults(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for result in self.results:
            total.update(result.faults)
        return {str(kind): total[kind] for kind in sorted(total)}

    @property
    def configured_faults(self) -> list[str]:
        """Fault kinds configured to fire (``batch_fail`` only over memory: it strikes
        inside the memory backend's batch write)."""
        kinds = {str(s.kind) for s in self.config.faults.specs if s.probability > 0}
        if self.config.storage_url is not None:
            kinds.discard(str(FaultKind.BATCH_FAIL))
        return sorted(kinds)

    @property
    def never_fired(self) -> list[str]:
        fired = self.faults
        return [kind for kind in self.configured_faults if not fired.get(kind)]

    @property
    def failing(self) -> list[SeedResult]:
        return [r for r in self.results if r.violations]

    @property
    def violations(self) -> int:
        return sum(r.violation_count for r in self.results)

    @property
    def crashes(self) -> int:
        return sum(r.crashes for r in self.results)

    @property
    def batch_crashes(self) -> int:
        return sum(r.batch_crashes for r in self.results)

    @property
    def coverage(self) -> dict[str, int]:
        """Every coverage path's total over the seeds, sorted by name."""
        total: Counter[str] = Counter()
        for result in self.results:
            total.update(result.coverage)
        return dict(sorted(total.items()))

    @property
    def required(self) -> list[str]:
        """Paths some seed's features or the workload require, sorted."""
        return sorted({path for r in self.results for path in r.required})

    @property
    def never_taken(self) -> list[str]:
        """Required paths no seed took; empty for storms under ``coverage.MIN_SEEDS`` seeds."""
        if self.seeds < coverage.MIN_SEEDS:
            return []
        taken = self.coverage
        return [path for path in self.required if not taken.get(path)]

    @property
    def ok(self) -> bool:
        return not self.failing and not self.never_taken

    def summary(self, *, max_failures: int = 10) -> str:
        """A plain-text table: seeds, invocations, speed, faults, violations, replays."""
        rows: list[tuple[str, str]] = [
            ("workload", f"{self.workload} (runtime: {self.config.runtime})"),
            ("storage", self.config.storage_url or "memory:// (virtual time)"),
            ("seeds", f"{self.seeds:,}"),
            ("invocations", f"{self.invocations:,}"),
            ("invocations/s", f"{self.invocations_per_second:,.0f}"),
            ("acknowledged", f"{sum(r.acknowledged for r in self.results):,}"),
            ("given up", f"{sum(r.gave_up for r in self.results):,}"),
            ("process crashes", f"{self.crashes:,}"),
            ("crashes mid-batch", f"{self.batch_crashes:,}"),
            ("wall time", f"{self.wall_time:.2f} s"),
        ]
        if self.seeds == 1:
            rows.append(("topology", self.results[0].topology))
        fired = self.faults
        for kind in sorted(set(self.configured_faults) | set(fired)):
            rows.append((f"fault {kind}", f"{fired.get(kind, 0):,}"))
        rows.append(("never fired", ", ".join(self.never_fired) or "-"))
        required = set(self.required)
        for path, total in self.coverage.items():
            rows.append((f"path {path}" + (" *" if path in required else ""), f"{total:,}"))
        rows.append(("paths never taken", ", ".join(self.never_taken) or "-"))
        rows.append(("violations", f"{self.violations:,}"))
        rows.append(("failing seeds", f"{len(self.failing):,}"))
        width = max(len(name) for name, _ in rows)
        lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
        workload = self.factory or self.workload
        python = replays_in_python(self.config, workload)
        for result in self.failing[:max_failures]:
            lines.append("")
            lines.append(
                f"seed {result.seed} FAILED ({_plural(result.violation_count, 'violation')}; "
                f"{result.topology}):"
            )
            lines.extend(f"  - {v.splitlines()[0]}" for v in result.violations[:3])
            lines.append("  replay (Python):" if python else "  replay:")
            lines.extend(
                f"    {line}" for line in replay_commands(result.seed, self.config, workload)
            )
        if len(self.failing) > max_failures:
            lines.append(f"... and {len(self.failing) - max_failures:,} more failing seeds")
        return "\n".join(lines)


def run_storm(
    seeds: Iterable[int],
    config: SimConfig,
    workload: str | Callable[[], Workload] = "ledger",
    *,
    progress: Callable[[SeedResult], None] | None = None,
    stop_on_failure: bool = False,
) -> StormResult:
    """Run ``config`` once per seed (``config.seed`` is replaced by each seed)."""
    if isinstance(workload, str):
        name = workload
        factory = WORKLOADS[workload]
    else:
        factory = workload
        name = getattr(workload, "name", getattr(workload, "__name__", "custom"))
    storm = StormResult(name, config, factory=factory)
    started = time.perf_counter()
    for seed in seeds:
        result = run_seed(factory, dataclasses.replace(config, seed=seed))
        storm.results.append(result)
        if progress is not None:
            progress(result)
        if stop_on_failure and result.violations:
            break
    storm.wall_time = time.perf_counter() - started
    return storm


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"
