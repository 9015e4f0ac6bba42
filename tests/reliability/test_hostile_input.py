"""Hostile input to the public API: a named error, nothing written, nobody else touched.

Hypothesis generates the input (``kelpie.reliability.hostile``): wrong types,
empty, huge and odd keys and ids, unencodable state, payloads and results,
corrupted stored state, invalid URLs and options, wrong Redis passwords.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest

from kelpie.identity import ActorId
from kelpie.reliability.hostile import Fuzzer, password_leaks, wrong_passwords
from kelpie.storage.memory import MemoryStorage
from kelpie.testing.redis_server import RedisServer, _free_port

from .conftest import needs_redis

EXAMPLES = 100  # per target; the soak runs thousands
TARGETS = ["storage_calls", "runtime_calls", "corrupt_state"]


def _fuzz(fuzzer: Fuzzer, target: str, examples: int = EXAMPLES, *args: Any) -> None:
    try:
        getattr(fuzzer, target)(examples, *args)
    finally:
        fuzzer.close()
    report = fuzzer.report
    print(report.by_target, f"{report.rejected} named errors")
    assert report.violations == []
    assert report.inputs >= examples
    assert report.rejected > 0


@pytest.mark.parametrize("target", TARGETS)
def test_hostile_input_on_lmdb(tmp_path: Path, target: str) -> None:
    pytest.importorskip("lmdb")
    _fuzz(Fuzzer(f"lmdb://{tmp_path / 'db'}", seed=1), target)


@pytest.mark.parametrize("target", TARGETS)
def test_hostile_input_on_memory(target: str) -> None:
    _fuzz(Fuzzer("memory://", seed=2), target)


@needs_redis
@pytest.mark.parametrize("target", TARGETS)
def test_hostile_input_on_redis(redis_server: RedisServer, target: str) -> None:
    _fuzz(Fuzzer(redis_server.url, seed=3), target, 40)


def test_hostile_urls_and_options() -> None:
    _fuzz(Fuzzer("memory://", seed=6), "urls_and_options", 300)


def test_hostile_values_of_known_options(tmp_path: Path) -> None:
    _fuzz(Fuzzer("memory://", seed=7), "known_options", 300, str(tmp_path / "opts"))


class _WritesBeforeValidating(MemoryStorage):
    """A planted bug: writes a marker (a new value every time) before the key is checked."""

    calls = 0

    async def set(self, actor: ActorId, key: bytes, value: bytes) -> None:
        if isinstance(actor, ActorId):
            self.calls += 1
            await super().set(actor, b"marker", b"%d" % self.calls)
        await super().set(actor, key, value)


def test_the_fuzzer_catches_a_backend_that_writes_before_validating() -> None:
    fuzzer = Fuzzer(storage=_WritesBeforeValidating(), seed=4)
    try:
        fuzzer.storage_calls(200)
    finally:
        fuzzer.close()
    print(fuzzer.report.violations)
    assert any("changed its records" in v for v in fuzzer.report.violations)


@needs_redis
async def test_wrong_redis_passwords_are_config_errors_and_never_leak(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    right = "Right-Pa55word!"
    wrong = wrong_passwords(20, random.Random(5))
    caplog.set_level(logging.DEBUG)
    with RedisServer(tmp_path / "pw", password=right) as server:
        inputs, violations = await password_leaks(server.port, right, wrong, down_port=_free_port())
    assert inputs == len(wrong) + 2
    assert violations == []
    logged: list[Any] = [r.getMessage() for r in caplog.records]
    assert not any(secret in line for secret in [right, *wrong] for line in logged)
