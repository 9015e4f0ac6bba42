"""What ``pip install kelpie`` brings: the installed metadata, read as pip reads it.

The default storage (``lmdb://./kelpie-data``) must work after a plain install,
so py-lmdb is a core dependency; Redis stays behind its extra.
"""

from __future__ import annotations

import asyncio
import os
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from kelpie.storage.registry import DEFAULT_URL, open_storage

README = Path(__file__).resolve().parent.parent / "README.md"


def _requirements() -> list[Requirement]:
    declared = requires("kelpie")
    assert declared is not None, "kelpie's installed metadata declares no requirements"
    return [Requirement(line) for line in declared]


def _needed_with(extra: str) -> set[str]:
    """The distributions ``pip install 'kelpie[extra]'`` installs (``""``: a plain install)."""
    return {
        req.name.lower()
        for req in _requirements()
        if req.marker is None or req.marker.evaluate({"extra": extra})
    }


def test_lmdb_is_a_core_dependency_without_an_extra_marker() -> None:
    lmdb = [req for req in _requirements() if req.name.lower() == "lmdb"]
    assert lmdb, "lmdb is not among kelpie's requirements"
    assert all(req.marker is None for req in lmdb), [str(req) for req in lmdb]
    assert "lmdb" in _needed_with("")


def test_redis_is_required_only_by_the_redis_extra() -> None:
    redis = [req for req in _requirements() if req.name.lower() == "redis"]
    assert redis, "redis is not among kelpie's requirements"
    for req in redis:
        assert req.marker is not None, f"{req} would be installed by a plain install"
        assert str(req.marker) == 'extra == "redis"', str(req)
    assert "redis" not in _needed_with("")
    assert "redis" in _needed_with("redis")


def test_the_default_url_opens_and_stores_after_a_plain_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Everything a plain install brings is enough for the default URL.
    from kelpie.identity import ActorId

    assert DEFAULT_URL.startswith("lmdb://")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KELPIE_STORAGE_URL", raising=False)

    async def roundtrip() -> bytes | None:
        async with open_storage() as storage:
            await storage.set(ActorId("packaging", "default"), b"k", b"v")
            return await storage.get(ActorId("packaging", "default"), b"k")

    assert asyncio.run(roundtrip()) == b"v"
    assert os.path.isdir(tmp_path / "kelpie-data")


def test_readme_says_lmdb_needs_nothing_extra() -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `lmdb:")]
    assert len(rows) == 1, rows
    install = rows[0].rstrip(" |").rsplit("|", 1)[1]
    assert "pip install" not in install and "nothing extra" in install, rows[0]


def test_the_conformance_extra_brings_exactly_what_the_suite_needs() -> None:
    plain = _needed_with("")
    conformance = _needed_with("conformance") - plain
    assert conformance == {"pytest", "pytest-asyncio", "hypothesis"}, conformance
    # kelpie[test] brings the conformance extra (and redis) through itself.
    via_test = {str(req) for req in _requirements() if req.name.lower() == "kelpie"}
    assert any("conformance" in req and 'extra == "test"' in req for req in via_test), via_test


def test_readme_says_kelpie_conformance_needs_the_conformance_extra() -> None:
    assert "pip install 'kelpie[conformance]'" in README.read_text()
