"""How to replay one seed of a storm exactly: a ``kelpie dst`` command or a Python call.

A built-in workload whose configuration ``kelpie dst`` options can express
replays with ``kelpie dst --seed N ...``. Anything else -- a workload of your
own passed to ``run_storm`` as a factory, extra ``invariants``, a
``SimConfig`` field the command has no option for -- replays with the Python
call ``run_seed(Factory, SimConfig(seed=N, ...))``, preceded by the imports it
needs, with every option that differs from ``SimConfig``'s defaults.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from typing import Any

from kelpie.dst.fault_plan import FaultPlan
from kelpie.dst.harness import SimConfig, Workload
from kelpie.dst.workloads import WORKLOADS

__all__ = ["builtin_workload", "cli_command", "python_call", "replay_commands", "replays_in_python"]

WorkloadArg = str | Callable[[], Workload]

# SimConfig fields ``kelpie dst`` has options for (seed and workload aside)
_CLI_FIELDS = frozenset(
    {
        "faults",
        "crashes",
        "clients",
        "steps",
        "runtime",
        "storage_url",
        "group_commit",
        "commit_latency",
        "runtimes",
        "leases",
        "lease_seconds",
        "idle_timeout",
        "chaos",
        "pauses",
        "idempotency_window",
        "history",
    }
)


def builtin_workload(workload: WorkloadArg) -> str | None:
    """The name of a built-in workload (given by name or by its factory), else ``None``."""
    if isinstance(workload, str):
        return workload if workload in WORKLOADS else None
    for name, factory in WORKLOADS.items():
        if factory is workload:
            return name
    return None


def _changed(config: SimConfig) -> dict[str, Any]:
    """The fields of ``config`` (seed aside) that differ from ``SimConfig``'s defaults."""
    changed = {}
    for f in dataclasses.fields(SimConfig):
        if f.name == "seed":
            continue
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:  # pragma: no cover - every field but seed has a default
            default = object()
        value = getattr(config, f.name)
        if value != default:
            changed[f.name] = value
    return changed


def replays_in_python(config: SimConfig, workload: WorkloadArg) -> bool:
    """Whether the replay is a Python call (no ``kelpie dst`` command can express it)."""
    if builtin_workload(workload) is None:
        return True
    if config.lease_seconds == 0:  # the command reads --lease-seconds 0 as "drawn per seed"
        return True
    if config.runtimes not in (None, 1, 2, 3):  # the choices of --runtimes
        return True
    return not set(_changed(config)) <= _CLI_FIELDS


def cli_command(seed: int, config: SimConfig, workload: str) -> str:
    """``kelpie dst --seed N --workload W ...``: replays ``seed`` of a built-in workload."""
    cli = ["kelpie", "dst", "--seed", str(seed), "--workload", workload]
    cli += ["--faults", config.faults.describe()]
    if config.crashes:
        cli.append("--crashes")
    if not config.group_commit:
        cli.append("--no-group-commit")
    if config.commit_latency is not None:
        cli += ["--commit-latency", repr(config.commit_latency)]
    if config.runtime != "kelpie":
        cli += ["--runtime", config.runtime]
    if config.runtimes is not None:
        cli += ["--runtimes", str(config.runtimes)]
    if config.leases is not None:
        cli.append("--leases" if config.leases else "--no-leases")
    if config.lease_seconds is not None:
        cli += ["--lease-seconds", repr(config.lease_seconds)]
    if config.idle_timeout is not None:
        cli += ["--idle-timeout", repr(config.idle_timeout)]
    if not config.chaos:
        cli.append("--no-chaos")
    if not config.pauses:
        cli.append("--no-pauses")
    if not config.history:
        cli.append("--no-history")
    if config.idempotency_window != SimConfig.idempotency_window:
        cli += ["--idempotency-window", str(config.idempotency_window)]
    if config.storage_url is not None:
        cli += ["--storage", config.storage_url]
    cli += ["--clients", str(config.clients), "--steps", str(config.steps)]
    return " ".join(shlex.quote(part) for part in cli)


class _Imports:
    """The lines a Python replay needs before its call: imports, grouped by module, then notes."""

    def __init__(self) -> None:
        self.modules: dict[str, list[str]] = {"kelpie.dst": ["SimConfig", "run_seed"]}
        self.notes: list[str] = []

    def add(self, module: str, name: str) -> None:
        names = self.modules.setdefault(module, [])
        if name not in names:
            names.append(name)

    def reference(self, obj: object) -> str:
        """The expression naming ``obj``, imported -- or, if it cannot be, a note saying so."""
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if not isinstance(module, str) or not isinstance(qualname, str):
            name = type(obj).__name__
            self.notes.append(f"# {name}: {obj!r}, the object the storm ran")
            return name
        if "<" not in qualname and module != "__main__":
            self.add(module, qualname.split(".")[0])
            return qualname
        name = qualname.rsplit(".", 1)[-1]
        where = "the script that ran the storm" if module == "__main__" else module
        if ".<locals>." in qualname:
            where = f"inside {qualname.rsplit('.<locals>.', 1)[0]}() in {where}"
        else:
            where = f"in {where}"
        self.notes.append(f"# {name} is defined {where}: run this where it is in scope")
        return name

    def lines(self) -> list[str]:
        imports = [f"from {m} import {', '.join(sorted(n))}" for m, n in self.modules.items()]
        return imports + self.notes


def python_call(seed: int, config: SimConfig, workload: WorkloadArg) -> list[str]:
    """The imports and the ``run_seed(...)`` call that replay ``seed``, one per line."""
    imports = _Imports()
    if isinstance(workload, str):
        if workload in WORKLOADS:
            factory = imports.reference(WORKLOADS[workload])
        else:
            factory = workload
            imports.notes.append(f"# {workload}: the factory of your workload {workload!r}")
    else:
        factory = imports.reference(workload)
    options = [f"seed={seed}"]
    for name, value in _changed(config).items():
        if name == "faults":
            assert isinstance(value, FaultPlan)
            imports.add("kelpie.dst", "FaultPlan")
            options.append(f"faults=FaultPlan.parse({value.describe()!r})")
        elif name == "invariants":
            refs = [imports.reference(fn) for fn in value]
            options.append(f"invariants=({', '.join(refs)},)")
        else:
            options.append(f"{name}={value!r}")
    return [*imports.lines(), f"run_seed({factory}, SimConfig({', '.join(options)}))"]


def replay_commands(
    seed: int, config: SimConfig, workload: WorkloadArg, *, pytest_target: str | None = None
) -> list[str]:
    """What replays ``seed`` exactly: a ``kelpie dst`` command, else the lines of a Python call.

    ``workload`` is a built-in workload's name or the factory given to
    ``run_storm``. With ``pytest_target`` (kelpie's own ``tests/dst``, say),
    also ``KELPIE_DST_SEED=N pytest TARGET``, which reruns every seed-driven
    test there with that one seed.
    """
    name = builtin_workload(workload)
    if name is not None and not replays_in_python(config, workload):
        lines = [cli_command(seed, config, name)]
    else:
        lines = python_call(seed, config, workload)
    if pytest_target is not None:
        lines.append(f"KELPIE_DST_SEED={seed} pytest {pytest_target}")
    return lines
