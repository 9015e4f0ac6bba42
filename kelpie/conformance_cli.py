"""``kelpie conformance URL``: run the storage conformance suite against one storage URL.

The suite (``kelpie.testing.conformance``) runs under pytest with kelpie's
plugin, exactly as ``pytest --pyargs kelpie.testing.conformance -p
kelpie.testing.plugin --storage-url=URL`` would. Every test writes only to
actors with fresh unique ids, so pointing it at a shared deployment is safe.
It needs ``pip install 'kelpie[conformance]'`` (pytest, pytest-asyncio,
Hypothesis) and leaves nothing in the current directory: no ``.pytest_cache``,
and Hypothesis keeps its files in a temporary directory. It leaves nothing in
the store either: the session ends by deleting every actor it wrote
(``kelpie.testing.plugin``). A store that cannot be reached is reported in
one line after one probe read, before any test runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["conformance_pytest_args", "run_conformance"]

_REQUIRED = ("pytest", "pytest_asyncio", "hypothesis")
_INSTALL_HINT = "pip install 'kelpie[conformance]'"


def _missing_modules() -> list[str]:
    return [name for name in _REQUIRED if importlib.util.find_spec(name) is None]


def conformance_pytest_args(url: str, extra_pytest_args: Sequence[str] = ()) -> list[str]:
    """The pytest command line that runs the suite against ``url``."""
    return [
        "--pyargs",
        "kelpie.testing.conformance",
        "-p",
        "kelpie.testing.plugin",
        "-p",
        "no:cacheprovider",  # write nothing into the installed package's directory
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        "--storage-url",
        url,
        *extra_pytest_args,
    ]


PROBE_SECONDS = 15.0
"""How long the one probe read may take before the store counts as unreachable."""


def _cannot_open(url: str) -> str | None:
    """Why ``url`` cannot be opened or reached (bad scheme or option, no server), or ``None``.

    One read of a key of a throwaway actor, before pytest starts: against a
    server that is down, the suite would otherwise fail every test, slowly.
    """
    from kelpie.errors import ConfigError, KelpieError
    from kelpie.identity import ActorId
    from kelpie.storage.registry import open_storage

    try:
        storage = open_storage(url)
    except ConfigError as exc:
        return str(exc)

    async def probe() -> str | None:
        try:
            actor = ActorId("kelpie-conformance-probe", uuid.uuid4().hex)
            await asyncio.wait_for(storage.get(actor, b"probe"), PROBE_SECONDS)
        except TimeoutError:
            return f"no answer to one read within {PROBE_SECONDS:g} s"
        except KelpieError as exc:
            return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        finally:
            with contextlib.suppress(KelpieError):  # the probe's verdict is what matters
                await storage.close()
        return None

    return asyncio.run(probe())


def _is_redis(url: str) -> bool:
    from kelpie.storage.url import StorageURL

    return StorageURL.parse(url).scheme in {"redis", "rediss", "unix", "redis+cluster"}


def _scratch_url(url: str) -> str:
    from kelpie.storage.redis.scratch import scratch_url  # needs redis: only for its URLs

    return scratch_url(url, "conformance")


def _drop(run_url: str) -> None:
    """Remove the run's private prefix; a failure is one line on stderr, never a traceback."""
    from kelpie.errors import KelpieError
    from kelpie.storage.redis.scratch import drop_prefix

    try:
        asyncio.run(drop_prefix(run_url))
    except KelpieError as exc:
        print(
            f"kelpie conformance: could not remove the run's keys: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )


class _HypothesisHome:
    """A pytest plugin object: Hypothesis writes ``.hypothesis/`` (caches,
    examples) into the current directory by default; for this run it writes
    into ``directory`` instead. Set at configure time, before any test runs and
    once pytest has loaded Hypothesis' own plugin (importing Hypothesis earlier
    would keep pytest from rewriting its asserts, with a warning)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def pytest_configure(self) -> None:
        from hypothesis.configuration import set_hypothesis_home_dir

        set_hypothesis_home_dir(self.directory)

    def pytest_unconfigure(self) -> None:
        from hypothesis.configuration import set_hypothesis_home_dir

        set_hypothesis_home_dir(None)  # back to $HYPOTHESIS_STORAGE_DIRECTORY or ./


class _Tally:
    """A pytest plugin object counting test outcomes for the summary line."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" and report.passed:
            self.passed += 1
        elif report.failed:
            self.failed += 1
        elif report.skipped:
            self.skipped += 1


def run_conformance(url: str, extra_pytest_args: list[str]) -> int:
    """Run the conformance suite against ``url``; print a summary; 0 if every test passed."""
    from kelpie.testing.backends import url_id

    where = url_id(url)
    missing = _missing_modules()
    if missing:
        print(
            f"kelpie conformance: needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {_INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2

    problem = _cannot_open(url)
    if problem is not None:
        print(f"kelpie conformance: cannot use {where}: {problem}", file=sys.stderr)
        return 2

    import pytest

    tally = _Tally()
    # On Redis the run writes under a key prefix of its own, removed at the end:
    # the store-wide keys that deleting its actors leaves are its own too.
    run_url = _scratch_url(url) if _is_redis(url) else url
    try:
        with tempfile.TemporaryDirectory(prefix="kelpie-conformance-") as hypothesis_home:
            plugins = [tally, _HypothesisHome(hypothesis_home)]
            args = conformance_pytest_args(run_url, extra_pytest_args)
            code = int(pytest.main(args, plugins=plugins))
    finally:
        if run_url != url:
            _drop(run_url)
    if code == 0 and tally.failed == 0 and tally.passed > 0:
        print(f"kelpie conformance: PASS {where}: {tally.passed} passed, {tally.skipped} skipped")
        return 0
    if code == 0:
        # pytest succeeded but nothing ran (e.g. -k deselected everything).
        print(f"kelpie conformance: FAIL {where}: no conformance test ran")
        return 1
    print(
        f"kelpie conformance: FAIL {where}: {tally.failed} failed, {tally.passed} passed, "
        f"{tally.skipped} skipped (pytest exit code {code})"
    )
    return code
