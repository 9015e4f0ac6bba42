"""Hostile input to the public API: a named error, nothing written, nobody else touched.

Hypothesis generates the input (``kelpie.reliability.hostile``): wrong types,
empty, huge and odd keys and ids, unencodable state, payloads and results,
corrupted stored state, invalid URLs and options, hostile option values
against a live PostgreSQL, wrong Redis and PostgreSQL passwords.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any

import pytest

from kelpie.errors import ConfigError
from kelpie.identity import ActorId
from kelpie.reliability.hostile import Fuzzer, password_leaks, wrong_passwords
from kelpie.storage.memory import MemoryStorage
from kelpie.storage.registry import open_storage
from kelpie.testing.ports import free_port
from kelpie.testing.postgres_server import SUPERUSER, PostgresServer, missing_postgres
from kelpie.testing.redis_server import RedisServer

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
def test_hostile_input_on_sqlite(tmp_path: Path, target: str) -> None:
    _fuzz(Fuzzer(f"sqlite:///{tmp_path / 'hostile.db'}", seed=12), target)


@pytest.mark.parametrize("target", TARGETS)
def test_hostile_input_on_memory(target: str) -> None:
    _fuzz(Fuzzer("memory://", seed=2), target)


@needs_redis
@pytest.mark.parametrize("target", TARGETS)
def test_hostile_input_on_redis(redis_server: RedisServer, target: str) -> None:
    _fuzz(Fuzzer(redis_server.url, seed=3), target, 40)


needs_postgres = pytest.mark.skipif(missing_postgres() is not None, reason=str(missing_postgres()))


@needs_postgres
@pytest.mark.parametrize("target", TARGETS)
def test_hostile_input_on_postgres(postgres_server: PostgresServer, target: str) -> None:
    pytest.importorskip("asyncpg")
    url = postgres_server.url(table=f"hostile_{target}")
    _fuzz(Fuzzer(url, seed=8), target, 40)


@needs_postgres
def test_hostile_option_values_against_a_live_postgres(postgres_server: PostgresServer) -> None:
    pytest.importorskip("asyncpg")
    fuzzer = Fuzzer(postgres_server.url(table="hostile_live"), seed=9)
    _fuzz(fuzzer, "live_options", 300)
    print(f"{fuzzer.report.round_trips} round trips worked")
    assert fuzzer.report.round_trips >= 5  # accepted values were really used


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
        inputs, violations = await password_leaks(server.port, right, wrong, down_port=free_port())
    assert inputs == len(wrong) + 2
    assert violations == []
    logged: list[Any] = [r.getMessage() for r in caplog.records]
    assert not any(secret in line for secret in [right, *wrong] for line in logged)


@needs_postgres
async def test_wrong_postgres_passwords_are_config_errors_and_never_leak(
    postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("asyncpg")
    right = postgres_server.password
    wrong = wrong_passwords(10, random.Random(10))
    caplog.set_level(logging.DEBUG)
    inputs, violations = await password_leaks(
        postgres_server.port,
        right,
        wrong,
        down_port=free_port(),
        scheme="postgresql",
        user=SUPERUSER,
    )
    assert inputs == len(wrong) + 2
    assert violations == []
    logged: list[Any] = [r.getMessage() for r in caplog.records]
    assert not any(secret in line for secret in [right, *wrong] for line in logged)


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("postgresql://u:pw@127.0.0.1:1/db", {"statement_timeout": 2**31}),
        ("postgresql://u:pw@127.0.0.1:1/db", {"command_timeout": math.nan}),
        ("postgresql://u:pw@127.0.0.1:1/db", {"pool_max": 2**70}),
        ("postgresql://u:pw@127.0.0.1:1/db", {"table": "\ud800"}),
        ("postgresql://u:pw@127.0.0.1:1/db", {"host": "127.0.0.1\x00x"}),
        ("postgresql://u:pw@127.0.0.1:1/d%00b", {}),
        ("postgresql://u%00x:pw@127.0.0.1:1/db", {}),
    ],
    ids=["statement_timeout", "nan", "pool_max", "surrogate", "nul_host", "nul_db", "nul_user"],
)
def test_postgres_values_the_fuzzer_found_are_config_errors_at_open(
    url: str, options: dict[str, Any]
) -> None:
    """Found by live_options: each used to fail later (a StorageError on every call, a
    TimeoutError, a first call that never returned, a UnicodeEncodeError or ValueError)."""
    pytest.importorskip("asyncpg")
    with pytest.raises(ConfigError):
        open_storage(url, **options)


@needs_postgres
async def test_a_table_name_with_braces_and_quotes_works(postgres_server: PostgresServer) -> None:
    """Found by live_options: the statements were built with str.format after the table
    name was put in, so a brace in it raised KeyError or ValueError from open_storage."""
    pytest.importorskip("asyncpg")
    actor = ActorId("braces", "a")
    for table in ["x{y}", "a}", '{"0"}', "{}{{"]:
        async with open_storage(postgres_server.url(), table=table) as storage:
            await storage.set(actor, b"k", table.encode())
            assert await storage.get(actor, b"k") == table.encode()
            assert await storage.list_actors("braces") == [actor]
            assert await storage.list_keys(actor, b"k") == [b"k"]
            await storage.delete_actor(actor)
            assert await storage.list_actors("braces") == []


@needs_postgres
def test_run_on_postgres_includes_the_live_options(postgres_server: PostgresServer) -> None:
    pytest.importorskip("asyncpg")
    fuzzer = Fuzzer(postgres_server.url(table="hostile_run"), seed=11)
    try:
        report = fuzzer.run(60)
    finally:
        fuzzer.close()
    print(report.by_target, report.round_trips)
    assert report.violations == []
    assert report.by_target["live options"] == 10
    assert report.inputs == 60
