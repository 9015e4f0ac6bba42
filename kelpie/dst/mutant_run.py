"""Planting mutants and running the storm on them (``python -m kelpie.dst.mutants``).

``plant`` copies the ``kelpie`` package and applies one ``Mutant``;
``run_one`` runs the ``kelpie dst`` storm on such a copy in a child process
(``PYTHONPATH`` and working directory are the copy, and the child checks
``kelpie.__file__`` is inside it), stopping at the first failing seed;
``run_mutants`` runs the clean code and many mutants a few at a time. The
child side is ``child``: it calls ``kelpie.dst.cli.main`` with ``run_storm``
told to stop at the first failing seed and to note each finished seed, and
writes what it found as JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kelpie.dst.mutant_list import MUTANTS, Mutant

__all__ = [
    "CHILD_FLAG",
    "DEFAULT_STORM",
    "MutantError",
    "MutantResult",
    "child",
    "describe_source",
    "export_revision",
    "find_mutants",
    "locate",
    "package_dir",
    "plant",
    "run_mutants",
    "run_one",
    "where",
]

DEFAULT_STORM: tuple[str, ...] = ("--faults", "all", "--crashes")
"""The storm options used when none are given."""

CHILD_FLAG = "--child"
"""``python -m kelpie.dst.mutants --child OUT PROGRESS -- STORM...`` runs the child side."""
_ROOT_ENV = "KELPIE_MUTANT_ROOT"


class MutantError(Exception):
    """A mutant cannot be planted: its original text does not occur exactly once."""


def package_dir() -> Path:
    """The ``kelpie`` package this module belongs to (the code that gets mutated)."""
    return Path(__file__).resolve().parent.parent


def locate(mutant: Mutant, root: Path | None = None) -> tuple[str, int]:
    """``(text, line)`` of the file the mutant changes; raise ``MutantError`` unless
    its original occurs there exactly once."""
    root = package_dir() if root is None else root
    path = root / mutant.file
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MutantError(
            f"mutant {mutant.name!r}: cannot read kelpie/{mutant.file}: {exc}"
        ) from exc
    count = text.count(mutant.original)
    if count != 1:
        raise MutantError(
            f"mutant {mutant.name!r}: its original text occurs {count} times in "
            f"kelpie/{mutant.file} (expected exactly once) -- the code moved; update "
            f"kelpie/dst/mutant_list.py. The text:\n{mutant.original}"
        )
    return text, text[: text.index(mutant.original)].count("\n") + 1


def where(mutant: Mutant, source: Path | None = None) -> str:
    """``file:line`` of the mutant in today's code (``?`` if it cannot be found)."""
    try:
        _, line = locate(mutant, source)
    except MutantError:
        return f"{mutant.file}:?"
    return f"{mutant.file}:{line}"


def plant(mutant: Mutant | None, dest: Path, source: Path | None = None) -> Path:
    """Copy the ``kelpie`` package (or ``source``, a copy of it) into ``dest`` and apply
    ``mutant``; return the copy."""
    copy = dest / "kelpie"
    shutil.copytree(
        package_dir() if source is None else source,
        copy,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    if mutant is not None:
        text, _ = locate(mutant, copy)
        (copy / mutant.file).write_text(
            text.replace(mutant.original, mutant.replacement, 1), encoding="utf-8"
        )
    return copy


def export_revision(rev: str, dest: Path) -> Path:
    """The ``kelpie`` package as committed in git revision ``rev``, extracted into ``dest``.

    Lets a run ignore uncommitted edits in a shared work tree.
    """
    repo = package_dir().parent
    try:
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", rev, "kelpie"],
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise MutantError(
            f"cannot export kelpie/ at revision {rev!r} from {repo}: "
            f"{detail.decode(errors='replace').strip() or exc}"
        ) from exc
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "kelpie"


def describe_source(rev: str | None) -> str:
    """Which code the run planted into: a revision, or the work tree and its state."""
    repo = package_dir().parent
    if rev is not None:
        return f"kelpie/ at git revision {rev}"
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "kelpie"],
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return f"the work tree {package_dir()}"
    state = f"{len(dirty)} uncommitted changes under kelpie/" if dirty else "clean"
    return f"the work tree {package_dir()} (HEAD {head}, {state})"


def find_mutants(only: str | None) -> list[Mutant]:
    """The mutants named in ``only`` (comma-separated), or all of them."""
    if not only:
        return list(MUTANTS)
    by_name = {m.name: m for m in MUTANTS}
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise MutantError(
            f"unknown mutant(s): {', '.join(unknown)}; known: {', '.join(sorted(by_name))}"
        )
    return [by_name[name] for name in names]


@dataclass
class MutantResult:
    """What one child run found (``name`` ``"(clean)"``: the unmutated code)."""

    name: str
    where: str
    description: str
    caught: bool
    """A seed failed (for the clean run: the code under test is broken)."""
    seeds_run: int
    first_failing_seed: int | None
    caught_by: str
    """The first violation line, or why the run ended without one."""
    how: str
    """``invariant`` | ``simulator`` (deadlock, time limit, error) | ``storm`` (no seed
    failed but the storm did, e.g. coverage) | ``timeout`` | ``error`` | ``passed``."""
    wall_time: float
    invocations: int = 0
    imported_from: str = ""
    violations: list[str] = field(default_factory=list)
    summary: str = ""


def _classify(violation: str) -> str:
    if violation.startswith("simulation error:"):
        return "simulator"
    return "invariant"


def _short(text: str, width: int = 170) -> str:
    """The first line of a violation; if it ends with ':', also the first operation of
    the history slice below it (or else its next line)."""
    lines = [" ".join(line.split()) for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    if line.endswith(":") and len(lines) > 1:
        detail = next((rest for rest in lines[1:] if rest.startswith("op ")), lines[1])
        line = f"{line} {detail}"
    return line if len(line) <= width else line[: width - 3] + "..."


def run_one(
    mutant: Mutant | None,
    seeds: Sequence[int],
    storm: Sequence[str],
    *,
    timeout: float,
    python: str = sys.executable,
    source: Path | None = None,
) -> MutantResult:
    """Plant ``mutant`` (``None``: the clean code) in a copy and run the storm on it."""
    name = "(clean)" if mutant is None else mutant.name
    place = "-" if mutant is None else where(mutant, source)
    description = "the unmutated code" if mutant is None else mutant.description
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kelpie-mutant-") as tmp:
        root = Path(tmp)
        copy = plant(mutant, root, source)
        out = root / "result.json"
        progress = root / "progress.txt"
        argv = [
            python,
            "-m",
            "kelpie.dst.mutants",
            CHILD_FLAG,
            str(out),
            str(progress),
            "--",
            *storm,
            "--start",
            str(seeds[0]),
            "--seeds",
            str(len(seeds)),
            "--quiet",
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(root)
        env[_ROOT_ENV] = str(copy)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        try:
            # cwd is the copy's parent: `python -m` puts the cwd first on sys.path.
            child = subprocess.run(
                argv, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            done = _progress_lines(progress)
            return MutantResult(
                name, place, description, False, len(done), None,
                f"wall-clock timeout after {timeout:.0f} s (not a simulator catch)",
                "timeout", time.perf_counter() - started,
            )  # fmt: skip
        wall = time.perf_counter() - started
        if not out.exists():
            tail = (child.stderr or child.stdout).strip().splitlines()[-3:]
            return MutantResult(
                name, place, description, False, len(_progress_lines(progress)), None,
                "child failed: " + " | ".join(tail), "error", wall,
            )  # fmt: skip
        data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    violations: list[str] = data["violations"]
    failing = data["failing_seed"]
    caught = failing is not None
    if failing is not None:
        first = violations[0] if violations else "(a failing seed without a message)"
        caught_by, how = _short(first), _classify(first)
    elif data["status"] != 0:
        # Every seed passed but the storm failed as a whole (e.g. a required
        # coverage path never taken): a finding, though no seed shows it.
        caught = True
        caught_by, how = _short(f"storm failed: {_storm_reason(data['summary'])}"), "storm"
    else:
        caught_by, how = "-", "passed"
    return MutantResult(
        name, place, description, caught, data["seeds_run"], failing,
        caught_by, how, wall, data["invocations"], data["kelpie_file"], violations,
        data["summary"],
    )  # fmt: skip


def _storm_reason(summary: str) -> str:
    """The summary lines that say why a storm without a failing seed failed."""
    words = ("never", "fail", "violation", "error")
    lines = [
        " ".join(line.split())
        for line in summary.splitlines()
        if any(w in line.lower() for w in words) and not line.rstrip().endswith((" 0", " -"))
    ]
    return "; ".join(lines) or "kelpie dst exited non-zero"


def _progress_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def run_mutants(
    mutants: Sequence[Mutant],
    seeds: Sequence[int],
    storm: Sequence[str] = DEFAULT_STORM,
    *,
    jobs: int = 2,
    timeout: float = 600.0,
    clean: bool = True,
    on_done: Callable[[MutantResult], None] | None = None,
    source: Path | None = None,
) -> list[MutantResult]:
    """Run the clean code (if ``clean``) and every mutant, ``jobs`` at a time.

    Results come back in order: the clean run first, then ``mutants``.
    ``source`` is a copy of the package to plant into (default: this one).
    Raises ``MutantError`` before running anything if a mutant cannot be planted.
    """
    for mutant in mutants:
        locate(mutant, source)
    todo: list[Mutant | None] = [None] if clean else []
    todo.extend(mutants)
    lock = threading.Lock()

    def work(mutant: Mutant | None) -> MutantResult:
        own = storm
        if mutant is not None and mutant.workload is not None:
            own = [*storm, "--workload", mutant.workload]  # the last --workload wins
        result = run_one(mutant, seeds, own, timeout=timeout, source=source)
        if on_done is not None:
            with lock:
                on_done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(work, todo))


# -- the child: runs inside the planted copy ----------------------------------------


def child(args: Sequence[str]) -> int:
    """Run ``kelpie dst`` (its own argument parsing) stopping at the first failing seed;
    write what happened to ``args[0]`` as JSON and each finished seed to ``args[1]``."""
    out, progress_path, *rest = args
    storm_argv = rest[1:] if rest[:1] == ["--"] else rest
    import kelpie
    from kelpie.dst import cli, storm

    imported = str(Path(kelpie.__file__).resolve())
    expected = os.environ.get(_ROOT_ENV)
    if expected and not imported.startswith(str(Path(expected).resolve()) + os.sep):
        print(f"the child imported kelpie from {imported}, not from {expected}", file=sys.stderr)
        return 3
    real_run_storm = storm.run_storm
    captured: list[Any] = []
    progress_file = open(progress_path, "a", encoding="utf-8")  # noqa: SIM115

    def run_storm(*a: Any, **kw: Any) -> Any:
        outer = kw.get("progress")

        def note(result: Any) -> None:
            progress_file.write(f"{result.seed} {'FAIL' if result.violations else 'ok'}\n")
            progress_file.flush()
            if outer is not None:
                outer(result)

        kw["progress"] = note
        kw["stop_on_failure"] = True
        result = real_run_storm(*a, **kw)
        captured.append(result)
        return result

    storm.run_storm = run_storm
    if hasattr(cli, "run_storm"):
        cli.run_storm = run_storm
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = cli.main(list(storm_argv))
    progress_file.close()
    if not captured:
        print(f"kelpie dst exited {status} without running a storm:\n{buffer.getvalue()}",
              file=sys.stderr)  # fmt: skip
        return 3
    result = captured[-1]
    failing = next((r for r in result.results if r.violations), None)
    Path(out).write_text(
        json.dumps(
            {
                "kelpie_file": imported,
                "seeds_run": len(result.results),
                "failing_seed": None if failing is None else failing.seed,
                "violations": [] if failing is None else list(failing.violations),
                "invocations": result.invocations,
                "summary": buffer.getvalue(),
                "status": status,
            }
        ),
        encoding="utf-8",
    )
    return 0
