"""Every fenced Python example in README.md and docs/ runs, so the docs cannot drift.

Doctest-style: each ```python block is executed on its own, as a module named
``docs_example``, in a fresh temporary working directory with
``KELPIE_STORAGE_URL`` unset (so the default ``lmdb://./kelpie-data`` lands in
that directory). Top-level ``await`` runs on an event loop; then, if the block
defines them, ``async def main()`` is run, and so is every ``test_*`` function
it defines (a block written as a test file is run as its test). A block that
is a fragment and cannot run alone starts with a marker line giving the reason:

    # docs: not run: <why>

(kept rare; the reason is required). The SQLite backend of
docs/writing-a-backend.md is also run through the conformance suite, and the
test count in that page's sample output must be the count that runs now; and
in every documented shell command a URL with a query string is quoted.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "# docs: not run:"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Example:
    path: str  # relative to the repository
    line: int  # of the opening fence
    code: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        first = self.code.lstrip("\n").splitlines()[0] if self.code.strip() else ""
        if not first.startswith(MARKER):
            return None
        return first[len(MARKER) :].strip()


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def examples() -> list[Example]:
    found = []
    for document in _documents():
        text = document.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Example(str(document.relative_to(ROOT)), line, match.group(1)))
    return found


EXAMPLES = examples()

# Blocks in pages other helpers own that fail today, by (page, first line): each is an
# expected failure (strict: once the block is fixed or marked, drop its entry).
KNOWN_FAILURES: dict[tuple[str, str], tuple[type[BaseException], str]] = {}


def _params() -> list[Any]:
    params = []
    for example in EXAMPLES:
        if example.skip_reason is not None:
            continue  # not run: test_the_blocks_marked_not_run_still_compile checks them
        first = example.code.lstrip("\n").splitlines()[0] if example.code.strip() else ""
        known = KNOWN_FAILURES.get((example.path, first))
        marks = (
            []
            if known is None
            else [pytest.mark.xfail(raises=known[0], reason=known[1], strict=True)]
        )
        params.append(pytest.param(example, id=example.id, marks=marks))
    return params


def test_the_docs_have_python_examples_and_few_are_skipped() -> None:
    assert len(EXAMPLES) >= 5, [e.id for e in EXAMPLES]
    skipped = [e for e in EXAMPLES if e.skip_reason is not None]
    for example in skipped:
        assert example.skip_reason, f"{example.id}: '{MARKER}' needs a reason after it"
    assert len(skipped) <= len(EXAMPLES) // 4, [e.id for e in skipped]


def test_the_blocks_marked_not_run_still_compile() -> None:
    not_run = [e for e in EXAMPLES if e.skip_reason is not None]
    for example in not_run:
        compile(
            example.code,
            f"{example.path}:{example.line}",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | ast.PyCF_ONLY_AST,
            dont_inherit=True,
        )
    print(f"{len(not_run)} blocks marked not run, all compile")


def _run(result: Any) -> Any:
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def _defined_here(value: Any, module: types.ModuleType) -> bool:
    return inspect.isfunction(value) and value.__module__ == module.__name__


@pytest.mark.parametrize("example", _params())
def test_the_example_runs(
    example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KELPIE_STORAGE_URL", raising=False)
    code = compile(
        example.code,
        f"{example.path}:{example.line}",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    # A real module, registered while it runs: dataclasses and type hints look it up.
    module = types.ModuleType("docs_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    print(f"running {example.id} in {tmp_path}")
    _run(eval(code, module.__dict__))  # a coroutine when the block awaits at top level
    names = vars(module)
    if _defined_here(names.get("main"), module) and inspect.iscoroutinefunction(names["main"]):
        _run(names["main"]())
    for name, value in sorted(names.items()):
        if name.startswith("test_") and _defined_here(value, module):
            print(f"  {name}()")
            _run(value())


# -- commands: a URL with a query string is shell-quoted ------------------------------

_ANY_FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_COMMANDS = ("kelpie", "pytest", "python", "python3", "scripts/", ".venv/bin/", "benchmarks/")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_ENV = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+")


def _unquoted_query_urls(line: str) -> list[str]:
    """URLs with a ``?`` outside quotes in ``line``, if it is a shell command."""
    command = _ENV.sub("", line.strip().removeprefix("$ "))
    if not command.startswith(_COMMANDS):
        return []
    bare = _QUOTED.sub("''", command.split(" #", 1)[0])
    return re.findall(r"\S*://\S*\?\S*", bare)


def test_every_url_with_a_query_in_a_documented_command_is_shell_quoted() -> None:
    assert _unquoted_query_urls("kelpie conformance redis://h/0?prefix=x") == [
        "redis://h/0?prefix=x"
    ]
    assert _unquoted_query_urls("kelpie conformance 'redis://h/0?prefix=x'  # ok?") == []
    assert _unquoted_query_urls("redis://[user@]host[/db][?prefix=NAME]") == []  # syntax
    found = []
    for document in _documents():
        text = document.read_text(encoding="utf-8")
        for match in _ANY_FENCE.finditer(text):
            if match.group(1) in ("python", "toml", "json"):
                continue
            first = text.count("\n", 0, match.start(2)) + 1
            for offset, line in enumerate(match.group(2).splitlines()):
                for url in _unquoted_query_urls(line):
                    found.append(f"{document.relative_to(ROOT)}:{first + offset}: {url}")
    assert found == [], "quote these URLs (a shell reads ? as a glob, & as a separator)"


# -- the SQLite backend of docs/writing-a-backend.md passes the conformance suite --------

_BACKEND_PAGE = "docs/writing-a-backend.md"
_SAMPLE = re.compile(r"`kelpie conformance: PASS (\S+): (\d+) passed, (\d+) skipped`")


def test_the_sqlite_backend_of_writing_a_backend_passes_conformance_as_its_sample_says(
    tmp_path: Path,
) -> None:
    """Run as the page says for a scheme registered with ``register_scheme``: the pytest
    form, with the registering module loaded as a plugin; the counts match its sample."""
    (backend,) = [
        e for e in EXAMPLES if e.path == _BACKEND_PAGE and "kelpie_sqlite" in e.code.splitlines()[0]
    ]
    (tmp_path / "kelpie_sqlite.py").write_text(backend.code, encoding="utf-8")
    (tmp_path / "register_sqlite.py").write_text(
        "from kelpie.storage import register_scheme\n"
        "from kelpie_sqlite import open_sqlite\n\n"
        'register_scheme("sqlite", open_sqlite)\n',
        encoding="utf-8",
    )
    sample = _SAMPLE.search((ROOT / _BACKEND_PAGE).read_text(encoding="utf-8"))
    assert sample, f"{_BACKEND_PAGE} has no sample 'kelpie conformance: PASS ...' line"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("KELPIE_STORAGE_URL", None)
    command = [
        sys.executable, "-m", "pytest", "--pyargs", "kelpie.testing.conformance",
        "-p", "kelpie.testing.plugin", "-p", "register_sqlite",
        f"--storage-url=sqlite:///{tmp_path}/conformance.db",
        "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path, env=env
    )
    print(result.stdout[-3000:])
    print(result.stderr[-3000:])
    assert result.returncode == 0
    summary = result.stdout.strip().splitlines()[-1]
    counts = dict(
        (word, int(n)) for n, word in re.findall(r"(\d+) (passed|skipped|failed)", summary)
    )
    ran = (counts.get("passed", 0), counts.get("skipped", 0))
    assert ran == (int(sample.group(2)), int(sample.group(3))), (
        f"{_BACKEND_PAGE} says {sample.group(0)}; the suite now runs: {summary}"
    )
