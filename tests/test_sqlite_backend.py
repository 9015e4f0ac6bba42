"""SQLite-specific behaviour: URLs, options, layout, sharing a file, processes, group commit.

The generic contract is checked by the conformance suite (``sqlite`` is a
built-in test backend); these tests cover what only ``sqlite://`` has.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from kelpie.errors import (
    ConfigError,
    CorruptStateError,
    StorageClosedError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.registry import open_storage
from kelpie.storage.sqlite import SCHEMA_VERSION, SQLiteStorage
from kelpie.storage.sqlite.database import upper_bound
from kelpie.storage.sqlite.errors import translate
from tests.script_support import run_script

ALICE = ActorId("bank", "alice")


def _open(path: Path, **options: object) -> SQLiteStorage:
    storage = open_storage(f"sqlite://{path}", **options)
    assert isinstance(storage, SQLiteStorage)
    return storage


# -- URLs and options ---------------------------------------------------------


async def test_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_storage("sqlite://./data/kelpie.db") as storage:
        assert isinstance(storage, SQLiteStorage)
        assert storage.path == str(tmp_path / "data" / "kelpie.db")
        await storage.set(ALICE, b"k", b"v")
    assert (tmp_path / "data" / "kelpie.db").is_file()


async def test_absolute_url_creates_the_file_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "kelpie.db"
    async with _open(path) as storage:
        await storage.set(ALICE, b"k", b"v")
        assert repr(storage) == f"SQLiteStorage('sqlite://{path}')"
    assert path.is_file()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://./", "sqlite:////"])
def test_url_without_a_file_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"names no file|filesystem root"):
        open_storage(url)


def test_url_naming_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names a directory"):
        open_storage(f"sqlite://{tmp_path}")


def test_url_with_a_host_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a host"):
        open_storage("sqlite://server/kelpie.db")


async def test_options_come_from_query_and_keywords(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/k.db?sync=normal&busy_timeout=250&max_batch=7"
    async with open_storage(url, group_commit=False) as storage:
        assert isinstance(storage, SQLiteStorage)
        assert storage.options.sync == "normal"
        assert storage.options.busy_timeout == 250
        assert storage.options.max_batch == 7
        assert storage.options.group_commit is False
        await storage.set(ALICE, b"k", b"v")
        assert storage.batch_stats == (0, 0)
    async with _open(tmp_path / "d.db") as storage:
        assert storage.options.sync == "full"
        assert storage.options.busy_timeout == 5000


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"sync": "off"}, "'sync'"),
        ({"busy_timeout": "-1"}, "'busy_timeout'"),
        ({"busy_timeout": "soon"}, "'busy_timeout'"),
        ({"max_batch": "0"}, "'max_batch'"),
        ({"group_commit": "maybe"}, "'group_commit'"),
        ({"journal": "wal"}, "unknown option 'journal'.*known options: busy_timeout"),
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, options: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_storage(f"sqlite://{tmp_path}/k.db", **options)
    assert not (tmp_path / "k.db").exists()


# -- layout ---------------------------------------------------------------------


async def test_the_file_is_in_wal_mode_with_a_schema_version_row(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    async with _open(path) as storage:
        await storage.set(ALICE, b"k", b"v")
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute(
                "SELECT value FROM kelpie_meta WHERE name = 'schema_version'"
            ).fetchone() == (SCHEMA_VERSION,)
            assert db.execute("SELECT actor, key, value FROM kelpie_records").fetchall() == [
                (ALICE.encode(), b"k", b"v")
            ]
            assert db.execute("SELECT actor, version FROM kelpie_versions").fetchall() == [
                (ALICE.encode(), 1)
            ]
        finally:
            db.close()


def test_list_keys_is_an_index_range_scan(tmp_path: Path) -> None:
    from kelpie.storage.sqlite.database import _KEYS_BETWEEN

    path = tmp_path / "k.db"
    _open(path)  # creates the tables; closed with the process
    db = sqlite3.connect(path)
    try:
        plan = " | ".join(
            str(row[-1])
            for row in db.execute("EXPLAIN QUERY PLAN " + _KEYS_BETWEEN, (b"a", b"p", b"q"))
        )
    finally:
        db.close()
    print(plan)
    assert "key>? AND key<?" in plan
    assert "SCAN" not in plan


def test_upper_bound_of_a_prefix() -> None:
    assert upper_bound(b"") is None
    assert upper_bound(b"\xff\xff") is None
    assert upper_bound(b"ab") == b"ac"
    assert upper_bound(b"a\xff") == b"b"
    assert upper_bound(b"\x00") == b"\x01"


async def test_commits_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    async with _open(path) as storage:
        for i in range(5):
            await storage.set(ALICE, b"k%d" % i, b"v%d" % i)
    async with _open(path) as storage:
        assert await storage.list_keys(ALICE) == [b"k%d" % i for i in range(5)]
        assert await storage.get(ALICE, b"k4") == b"v4"


async def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    async with _open(path):
        pass
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE kelpie_meta SET value = 99 WHERE name = 'schema_version'")
    db.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        _open(path)


def test_a_file_that_is_not_sqlite_is_corrupt_state(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    path.write_bytes(b"this is not an SQLite database, just text" * 100)
    with pytest.raises(CorruptStateError, match="not an SQLite database"):
        _open(path)


async def test_list_keys_is_exact_for_0x00_and_0xff_bytes(tmp_path: Path) -> None:
    keys = [b"\x00", b"\x00\x00", b"\x00\xff", b"\xff", b"\xff\x00", b"\xff\xff", b"a", b"a\xff"]
    neighbour_before, neighbour_after = ActorId("n", "before"), ActorId("n", "after")
    async with _open(tmp_path / "k.db") as storage:
        await storage.set(neighbour_before, b"\xff" * 256, b"x")
        async with storage.transaction(ALICE) as txn:
            for key in keys:
                await txn.set(key, key)
        await storage.set(neighbour_after, b"\x00", b"x")
        for prefix in [b"", b"\x00", b"\x00\x00", b"\xff", b"\xff\xff", b"a", b"b", b"\xff" * 3]:
            expected = sorted(key for key in keys if key.startswith(prefix))
            assert await storage.list_keys(ALICE, prefix) == expected, prefix
        assert await storage.list_keys(neighbour_before) == [b"\xff" * 256]
        assert await storage.list_keys(neighbour_after) == [b"\x00"]


# -- two storages, two processes, locks ------------------------------------------


async def test_two_storages_on_one_file_see_each_other_and_conflict(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    async with _open(path) as first, _open(path) as second:
        await first.set(ALICE, b"n", b"1")
        assert await second.get(ALICE, b"n") == b"1"
        txn = second.transaction(ALICE)
        assert await txn.get(b"n") == b"1"
        await first.set(ALICE, b"n", b"2")
        await txn.set(b"n", b"from second")
        with pytest.raises(TransactionConflictError):
            await txn.commit()
        reader = first.transaction(ALICE)
        assert await reader.list_keys() == [b"n"]
        await second.set(ALICE, b"other", b"x")
        with pytest.raises(TransactionConflictError):
            await reader.commit()  # read-only, and the actor moved since its read
        assert await first.get(ALICE, b"n") == b"2"


_INCREMENTER = """
    import asyncio, sys
    from kelpie.identity import ActorId
    from kelpie.errors import TransactionConflictError
    from kelpie.storage.registry import open_storage

    async def main(url, rounds):
        actor = ActorId("counter", "shared")
        commits = conflicts = 0
        async with open_storage(url) as storage:
            while commits < rounds:
                try:
                    async with storage.transaction(actor) as txn:
                        raw = await txn.get(b"n")
                        await asyncio.sleep(0)
                        await txn.set(b"n", str(int(raw or b"0") + 1).encode())
                except TransactionConflictError:
                    conflicts += 1
                    continue
                commits += 1
        print(commits, conflicts)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_two_processes_incrementing_one_counter_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    url = f"sqlite://{path}?sync=normal"
    async with _open(path) as storage:  # create it before the race
        await storage.set(ActorId("counter", "shared"), b"n", b"0")
    rounds = 150
    procs = [run_script(_INCREMENTER, url, str(rounds)) for _ in range(2)]
    results = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    commits = [int(out.split()[0]) for out, _ in results]
    conflicts = [int(out.split()[1]) for out, _ in results]
    print(f"commits per process {commits}, conflicts per process {conflicts}")
    async with _open(path) as storage:
        assert await storage.get(ActorId("counter", "shared"), b"n") == str(sum(commits)).encode()
    assert sum(commits) == 2 * rounds


async def test_reads_are_not_blocked_by_an_open_write_transaction(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    async with _open(path) as storage:
        await storage.set(ALICE, b"k", b"v")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock ...
            other.execute(
                "UPDATE kelpie_records SET value = x'00' WHERE actor = ?", (ALICE.encode(),)
            )
            # ... and the reads see the last committed version, at once.
            assert await asyncio.wait_for(storage.get(ALICE, b"k"), 10) == b"v"
            assert await asyncio.wait_for(storage.list_keys(ALICE), 10) == [b"k"]
            commit = asyncio.create_task(storage.set(ALICE, b"k", b"after"))
            await asyncio.sleep(0.05)
            assert not commit.done()  # the commit waits for the lock (busy_timeout)
            other.execute("ROLLBACK")
            await asyncio.wait_for(commit, 10)
        finally:
            other.close()
        assert await storage.get(ALICE, b"k") == b"after"


async def test_a_lock_held_past_busy_timeout_is_storage_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    async with _open(path, busy_timeout=100) as storage:
        await storage.set(ALICE, b"k", b"v")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StorageUnavailableError, match="busy_timeout"):
                await storage.set(ALICE, b"k", b"lost")
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert await storage.get(ALICE, b"k") == b"v"
        await storage.set(ALICE, b"k", b"later")
        assert await storage.get(ALICE, b"k") == b"later"


class _RefusesWal(sqlite3.Connection):
    """A connection whose first ``refusals`` WAL switches hit another opener's lock."""

    refusals = 0

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "PRAGMA journal_mode = WAL" and _RefusesWal.refusals > 0:
            _RefusesWal.refusals -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().execute(sql, *args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("refusals", "opens"), [(3, True), (1000, False)])
async def test_opening_a_new_file_waits_out_another_openers_wal_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusals: int, opens: bool
) -> None:
    """SQLite refuses a WAL switch at once (no busy handler) while another process opening
    the same new file holds a lock; the open waits up to busy_timeout, as for a lock."""
    connect = sqlite3.connect

    def refusing(*args: object, **kwargs: object) -> sqlite3.Connection:
        return connect(*args, **kwargs, factory=_RefusesWal)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(sqlite3, "connect", refusing)
    _RefusesWal.refusals = refusals
    path = tmp_path / "new.db"
    if opens:
        async with _open(path, busy_timeout=1000) as storage:
            await storage.set(ALICE, b"k", b"v")
            assert await storage.get(ALICE, b"k") == b"v"
        assert _RefusesWal.refusals == 0
    else:
        with pytest.raises(StorageUnavailableError, match="busy_timeout"):
            _open(path, busy_timeout=50)


def _open_and_close(url: str) -> str:
    try:
        storage = open_storage(url)
        asyncio.run(storage.close())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_processes_opening_one_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    """Seen before the fix: 2 of 40 rounds of three processes failed with "database is
    locked" at the WAL switch (``_switch_to_wal``); the test above pins it down."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        for round_ in range(10):
            url = f"sqlite://{tmp_path / f'r{round_}.db'}"
            assert pool.map(_open_and_close, [url] * 3) == ["ok"] * 3


def test_a_storage_inherited_across_fork_refuses_to_work(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    storage = _open(path)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        verdict = b"bad"
        try:
            asyncio.run(storage.get(ALICE, b"k"))
        except StorageClosedError:
            try:
                asyncio.run(storage.close())  # does not hang on the parent's writer thread

                async def fresh() -> bytes | None:
                    async with _open(path) as mine:
                        await mine.set(ALICE, b"k", b"child")
                        return await mine.get(ALICE, b"k")

                if asyncio.run(fresh()) == b"child":
                    verdict = b"ok"
            except Exception as exc:
                verdict = repr(exc).encode()
        os.write(write_end, verdict)
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    assert os.read(read_end, 200) == b"ok"
    os.close(read_end)

    async def parent() -> bytes | None:
        try:
            return await storage.get(ALICE, b"k")
        finally:
            await storage.close()

    assert asyncio.run(parent()) == b"child"


# -- group commit ---------------------------------------------------------------------


async def test_concurrent_commits_share_batches(tmp_path: Path) -> None:
    actors = [ActorId("g", f"a{i}") for i in range(64)]
    async with _open(tmp_path / "k.db") as storage:
        await asyncio.gather(*(storage.set(actor, b"k", b"v") for actor in actors))
        batches, commits = storage.batch_stats
        print(f"{commits} commits in {batches} batches")
        assert commits == len(actors)
        assert batches < commits
        assert [await storage.get(actor, b"k") for actor in actors] == [b"v"] * len(actors)


async def test_a_conflict_in_a_batch_fails_only_its_own_commit(tmp_path: Path) -> None:
    others = [ActorId("c", f"ok{i}") for i in range(8)]
    async with _open(tmp_path / "k.db") as storage:
        stale = storage.transaction(ALICE)
        assert await stale.get(b"k") is None
        await storage.set(ALICE, b"k", b"first")
        await stale.set(b"k", b"stale")
        lead = asyncio.ensure_future(storage.set(ActorId("c", "leader"), b"k", b"v"))
        await asyncio.sleep(0)  # the lead's commit is being written: the rest queue
        results = await asyncio.gather(
            stale.commit(),
            *(storage.set(actor, b"k", b"v") for actor in others),
            return_exceptions=True,
        )
        await lead
        batches, commits = storage.batch_stats
        assert batches < commits
        assert isinstance(results[0], TransactionConflictError)
        assert results[1:] == [None] * len(others)
        assert await storage.get(ALICE, b"k") == b"first"
        assert [await storage.get(actor, b"k") for actor in others] == [b"v"] * len(others)


# -- error translation -----------------------------------------------------------------


def _error(code: int, message: str) -> sqlite3.Error:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    return exc


@pytest.mark.parametrize(
    ("code", "kelpie_type"),
    [
        (5, StorageUnavailableError),  # SQLITE_BUSY
        (5 | (3 << 8), StorageUnavailableError),  # an extended BUSY code
        (13, StorageFullError),  # SQLITE_FULL
        (11, CorruptStateError),  # SQLITE_CORRUPT
        (26, CorruptStateError),  # SQLITE_NOTADB
        (10, StorageUnavailableError),  # SQLITE_IOERR
        (1, StorageError),  # SQLITE_ERROR
    ],
)
def test_every_sqlite_error_becomes_a_kelpie_error(
    code: int, kelpie_type: type[StorageError]
) -> None:
    translated = translate(_error(code, "boom"), "testing")
    assert type(translated) is kelpie_type
    assert "boom" in str(translated)


# -- kelpie bench ----------------------------------------------------------------------


def _entries(directory: Path) -> set[str]:
    return {entry.name for entry in directory.iterdir()}


async def test_bench_measures_sqlite_beside_its_raw_baseline_and_cleans_up(
    tmp_path: Path,
) -> None:
    from kelpie.bench import BenchOptions, Target, bench_storage

    options = BenchOptions(concurrencies=(1, 3), seconds=0.2, keys=(1, 4))
    target = Target("sqlite", f"sqlite://{tmp_path}/store.db")
    rows = await bench_storage(target, options, namespace="bench-sqlite")
    assert [(row.keys, row.concurrency) for row in rows] == [(1, 1), (1, 3), (4, 1), (4, 3)]
    for row in rows:
        assert row.kelpie.rate > 0
        assert row.raw is not None and row.raw.rate > 0
        assert row.ratio is not None and row.ratio > 0
    # the raw baseline's scratch directory is gone; only the store's files remain
    assert _entries(tmp_path) <= {
        "store.db",
        "store.db-wal",
        "store.db-shm",
    }
