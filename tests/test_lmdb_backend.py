"""LMDB-specific behaviour: URLs, options, layout, sharing, processes, map growth.

The generic contract is checked by the conformance suite; these tests cover
what only ``lmdb://`` has.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import lmdb
import pytest

from kelpie.errors import (
    ConfigError,
    CorruptStateError,
    KelpieError,
    StorageClosedError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.lmdb.env import WriteTxn, translate
from kelpie.storage.lmdb.storage import LMDBStorage, open_lmdb
from kelpie.storage.registry import open_storage
from tests.script_support import run_script

ALICE = ActorId("bank", "alice")


def _open(path: Path, **options: object) -> LMDBStorage:
    storage = open_storage(f"lmdb://{path}", **options)
    assert isinstance(storage, LMDBStorage)
    return storage


# -- URLs and options ---------------------------------------------------------


async def test_relative_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_storage("lmdb://./rel/dir") as storage:
        await storage.set(ALICE, b"k", b"v")
        assert isinstance(storage, LMDBStorage)
        assert storage.path == str((tmp_path / "rel" / "dir").resolve())
    assert (tmp_path / "rel" / "dir" / "data.mdb").is_file()


async def test_absolute_url_creates_the_directory(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    async with open_storage(f"lmdb://{target}") as storage:
        await storage.set(ALICE, b"k", b"v")
        assert await storage.get(ALICE, b"k") == b"v"
    assert (target / "data.mdb").is_file()


@pytest.mark.parametrize("url", ["lmdb://", "lmdb://somehost/dir"])
def test_url_without_a_directory_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="lmdb:"):
        open_lmdb(url)


async def test_options_come_from_query_and_keywords(tmp_path: Path) -> None:
    storage = open_lmdb(
        f"lmdb://{tmp_path}/db?map_size=1MiB&sync=false&max_readers=10",
        metasync="no",
        max_map_size="8MiB",
    )
    try:
        opts = storage.options
        assert (opts.map_size, opts.max_map_size) == (1024**2, 8 * 1024**2)
        assert (opts.sync, opts.metasync, opts.max_readers, opts.readahead) == (
            False,
            False,
            10,
            True,
        )
        await storage.set(ALICE, b"k", b"v")
    finally:
        await storage.close()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"mapsize": "1"}, "unknown option 'mapsize'.*map_size"),
        ({"sync": "maybe"}, "bad value for option 'sync'"),
        ({"map_size": "10"}, "at least"),
        ({"map_size": "2MiB", "max_map_size": "1MiB"}, "smaller than"),
        ({"max_readers": "0"}, "max_readers"),
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, options: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_lmdb(f"lmdb://{tmp_path}/db", **options)


def test_a_file_where_the_directory_should_be_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="not a directory"):
        open_lmdb(f"lmdb://{tmp_path}/file")
    with pytest.raises(ConfigError):
        open_lmdb(f"lmdb://{tmp_path}/file/below")


# -- durability and format -------------------------------------------------------


async def test_commits_survive_close_and_reopen(tmp_path: Path) -> None:
    async with _open(tmp_path) as storage:
        async with storage.transaction(ALICE) as txn:
            await txn.set(b"a", b"1")
            await txn.set(b"b", b"2")
        await storage.delete(ALICE, b"a")
    async with _open(tmp_path) as storage:
        assert await storage.list_keys(ALICE) == [b"b"]
        assert await storage.get(ALICE, b"b") == b"2"


async def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    async with _open(tmp_path) as storage:
        await storage.set(ALICE, b"k", b"v")
    env = lmdb.open(str(tmp_path), max_dbs=3)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"format", b"2", db=meta)
    env.close()
    with pytest.raises(ConfigError, match="format"):
        open_lmdb(f"lmdb://{tmp_path}")


def test_an_lmdb_environment_not_written_by_kelpie_is_refused(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path))
    with env.begin(write=True) as txn:
        txn.put(b"someone-else", b"data")
    env.close()
    with pytest.raises(ConfigError, match="not written by kelpie"):
        open_lmdb(f"lmdb://{tmp_path}")


# -- sharing one environment in a process ------------------------------------------


async def test_same_directory_twice_shares_one_environment(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "db")
    first = _open(tmp_path / "db")
    second = open_lmdb(f"lmdb://{tmp_path}/link/./")  # another spelling of the same directory
    assert first._env is second._env
    await first.set(ALICE, b"k", b"1")
    assert await second.get(ALICE, b"k") == b"1"

    async with first.transaction(ALICE) as txn:
        assert await txn.get(b"k") == b"1"
        await second.set(ALICE, b"k", b"2")
        await txn.set(b"k", b"lost update")
        with pytest.raises(TransactionConflictError):
            await txn.commit()
    assert await first.get(ALICE, b"k") == b"2"

    await first.close()
    assert await second.get(ALICE, b"k") == b"2"  # still open for the other user
    with pytest.raises(StorageClosedError):
        await first.get(ALICE, b"k")
    await second.close()
    await second.close()  # idempotent
    async with _open(tmp_path / "db") as again:
        assert await again.get(ALICE, b"k") == b"2"


async def test_sharing_with_other_options_is_a_config_error(tmp_path: Path) -> None:
    async with _open(tmp_path):
        with pytest.raises(ConfigError, match="other options"):
            _open(tmp_path, sync=False)


async def test_write_only_transactions_never_conflict(tmp_path: Path) -> None:
    async with _open(tmp_path) as storage:
        async with storage.transaction(ALICE) as txn:
            await txn.set(b"k", b"mine")
            await storage.set(ALICE, b"k", b"theirs")
        assert await storage.get(ALICE, b"k") == b"mine"


async def test_a_conflicting_commit_writes_nothing(tmp_path: Path) -> None:
    async with _open(tmp_path) as storage:
        txn = storage.transaction(ALICE)
        assert await txn.list_keys() == []  # a read of a never-written actor
        await storage.set(ALICE, b"other", b"x")
        await txn.set(b"a", b"1")
        await txn.set(b"b", b"2")
        with pytest.raises(TransactionConflictError):
            await txn.commit()
        assert await storage.list_keys(ALICE) == [b"other"]


# -- two OS processes ----------------------------------------------------------------

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
    url = f"lmdb://{tmp_path}"
    async with _open(tmp_path) as storage:  # create it before the race
        await storage.set(ActorId("counter", "shared"), b"n", b"0")
    rounds = 150
    procs = [run_script(_INCREMENTER, url, str(rounds)) for _ in range(2)]
    results = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    commits = [int(out.split()[0]) for out, _ in results]
    conflicts = [int(out.split()[1]) for out, _ in results]
    print(f"commits per process {commits}, conflicts per process {conflicts}")
    async with _open(tmp_path) as storage:
        assert await storage.get(ActorId("counter", "shared"), b"n") == str(sum(commits)).encode()
    assert sum(commits) == 2 * rounds


_HOLD_WRITE_LOCK = """
    import sys, lmdb
    env = lmdb.open(sys.argv[1], max_dbs=3)
    txn = env.begin(write=True)
    print("holding", flush=True)
    sys.stdin.readline()
    txn.abort()
"""


async def test_reads_do_not_wait_for_another_process_writer(tmp_path: Path) -> None:
    async with _open(tmp_path) as storage:
        await storage.set(ALICE, b"k", b"v")
        holder = run_script(_HOLD_WRITE_LOCK, str(tmp_path))
        try:
            assert holder.stdout is not None and holder.stdin is not None
            assert holder.stdout.readline().strip() == "holding"
            # Hang guard only: the reads must complete while the lock is held.
            assert await asyncio.wait_for(storage.get(ALICE, b"k"), 60) == b"v"
            assert await asyncio.wait_for(storage.list_keys(ALICE), 60) == [b"k"]
            commit = asyncio.create_task(storage.set(ALICE, b"k", b"after"))
            holder.stdin.write("release\n")
            holder.stdin.flush()
            await asyncio.wait_for(commit, 60)
        finally:
            holder.communicate(timeout=60)
        assert await storage.get(ALICE, b"k") == b"after"


_GROW_FROM_ANOTHER_PROCESS = """
    import asyncio, sys
    from kelpie.identity import ActorId
    from kelpie.storage.registry import open_storage

    async def main(url):
        async with open_storage(url, map_size="64KiB") as storage:
            for i in range(6):
                await storage.set(ActorId("big", "one"), b"v%d" % i, bytes([i]) * 1024 * 1024)

    asyncio.run(main(sys.argv[1]))
"""


async def test_a_map_grown_by_another_process_is_adopted(tmp_path: Path) -> None:
    big = ActorId("big", "one")
    async with _open(tmp_path, map_size="64KiB") as storage:
        await storage.set(ALICE, b"small", b"x")
        grower = run_script(_GROW_FROM_ANOTHER_PROCESS, f"lmdb://{tmp_path}")
        _, err = grower.communicate(timeout=300)
        assert grower.returncode == 0, err
        assert await storage.list_keys(big) == [b"v%d" % i for i in range(6)]
        assert await storage.get(big, b"v5") == bytes([5]) * 1024 * 1024
        assert storage.map_size() >= 6 * 1024 * 1024  # adopted the other process's map
        await storage.set(big, b"v6", b"\x06" * 1024 * 1024)
        assert await storage.get(big, b"v6") == b"\x06" * 1024 * 1024


# -- map growth ---------------------------------------------------------------------


async def test_a_tiny_map_grows_to_fit_megabytes(tmp_path: Path) -> None:
    async with _open(tmp_path, map_size="64KiB") as storage:
        start = storage.map_size()
        for i in range(4):
            await storage.set(ALICE, b"v%d" % i, bytes([i]) * (1024 * 1024))
        async with storage.transaction(ALICE) as txn:
            await txn.set(b"batch-a", b"a" * 3 * 1024 * 1024)
            await txn.set(b"batch-b", b"b" * 3 * 1024 * 1024)
        assert storage.map_size() > start
    async with _open(tmp_path, map_size="64KiB") as storage:
        assert await storage.get(ALICE, b"v3") == b"\x03" * (1024 * 1024)
        assert await storage.get(ALICE, b"batch-b") == b"b" * 3 * 1024 * 1024


async def test_past_max_map_size_the_commit_fails_whole_and_earlier_data_stays(
    tmp_path: Path,
) -> None:
    async with _open(tmp_path, map_size="64KiB", max_map_size="1MiB") as storage:
        await storage.set(ALICE, b"early", b"kept")
        with pytest.raises(StorageFullError, match="max_map_size"):
            async with storage.transaction(ALICE) as txn:
                await txn.set(b"small", b"s")
                await txn.set(b"huge", b"h" * 2 * 1024 * 1024)
        assert await storage.list_keys(ALICE) == [b"early"]
        assert await storage.get(ALICE, b"early") == b"kept"
        await storage.set(ALICE, b"after", b"still works")
        assert await storage.list_keys(ALICE) == [b"after", b"early"]


# -- group commit: one write transaction, one outcome per commit ---------------------


class _PutJob:
    """A ``WriteJob`` that puts raw records (a key over 511 bytes makes LMDB fail)."""

    size_hint = 0

    def __init__(self, *keys: bytes) -> None:
        self.keys = keys

    def check(self, w: WriteTxn) -> None:
        return None

    def write(self, w: WriteTxn) -> None:
        for key in self.keys:
            w.records.put(key, b"v")


async def test_an_lmdb_error_halfway_through_a_batch_fails_only_its_commit(
    tmp_path: Path,
) -> None:
    async with _open(tmp_path) as storage:
        env = storage._env
        jobs = [_PutJob(b"job-a"), _PutJob(b"job-b", b"x" * 600), _PutJob(b"job-c")]
        outcomes = await env.write_batch(jobs)
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], StorageError)

        def stored(txn: lmdb.Transaction[bytes], keys: list[bytes]) -> list[bytes | None]:
            return [txn.get(key, db=env.records) for key in keys]

        # job-b put its first key before failing: the rerun left none of it.
        assert await env.read(stored, [b"job-a", b"job-b", b"job-c"]) == [b"v", None, b"v"]


async def test_corrupt_entries_fail_only_their_own_commits_in_a_batch(tmp_path: Path) -> None:
    damaged, others = ActorId("c", "damaged"), [ActorId("c", f"ok{i}") for i in range(4)]
    leader = ActorId("c", "leader")
    async with _open(tmp_path) as storage:
        for actor in [damaged, leader, *others]:
            await storage.set(actor, b"k", b"before")
    env = lmdb.open(str(tmp_path), max_dbs=3)
    actors, meta = env.open_db(b"actors"), env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(damaged.encode(), b"short", db=actors)
        txn.put(b"next_actor", b"bad", db=meta)  # a new actor cannot get a number
    env.close()
    async with _open(tmp_path) as storage:
        lead = asyncio.ensure_future(storage.set(leader, b"k", b"after"))
        await asyncio.sleep(0)  # the lead's commit is being written: the rest queue
        results = await asyncio.gather(
            storage.set(damaged, b"k", b"after"),
            storage.set(ActorId("c", "new"), b"k", b"after"),
            *(storage.set(actor, b"k", b"after") for actor in others),
            return_exceptions=True,
        )
        await lead
        batches, commits = storage.batch_stats
        assert batches < commits  # the commits shared a write transaction
        assert isinstance(results[0], CorruptStateError)
        assert isinstance(results[1], CorruptStateError)
        assert results[2:] == [None] * len(others)
        assert [await storage.get(actor, b"k") for actor in others] == [b"after"] * len(others)
        assert await storage.get(ActorId("c", "new"), b"k") is None


# -- layout: keys, prefixes, hostile ids -------------------------------------------------


async def test_list_keys_is_exact_for_0x00_and_0xff_bytes(tmp_path: Path) -> None:
    keys = [b"\x00", b"\x00\x00", b"\x00\xff", b"\xff", b"\xff\x00", b"\xff\xff", b"a", b"a\xff"]
    neighbour_before, neighbour_after = ActorId("n", "before"), ActorId("n", "after")
    async with _open(tmp_path) as storage:
        await storage.set(neighbour_before, b"\xff" * 256, b"x")
        async with storage.transaction(ALICE) as txn:
            for key in keys:
                await txn.set(key, key)
        await storage.set(neighbour_after, b"\x00", b"x")
        for prefix in [
            b"",
            b"\x00",
            b"\x00\x00",
            b"\xff",
            b"\xff\xff",
            b"a",
            b"b",
            b"\xff\xff\xff",
        ]:
            expected = sorted(key for key in keys if key.startswith(prefix))
            assert await storage.list_keys(ALICE, prefix) == expected, prefix
        assert await storage.list_keys(neighbour_before) == [b"\xff" * 256]
        assert await storage.list_keys(neighbour_after) == [b"\x00"]


async def test_hostile_actor_ids_never_share_records(tmp_path: Path) -> None:
    ids = [
        ActorId("a:b", "c"),
        ActorId("a", "b:c"),
        ActorId("a", "b/c"),
        ActorId("a/b", "c"),
        ActorId("a\x00", "b"),
        ActorId("a", "\x00b"),
        ActorId("{x}", "y"),
        ActorId("\x01a", "b"),
    ]
    async with _open(tmp_path) as storage:
        for index, actor in enumerate(ids):
            await storage.set(actor, b"who", str(index).encode())
        for index, actor in enumerate(ids):
            assert await storage.get(actor, b"who") == str(index).encode()
            assert await storage.list_keys(actor) == [b"who"]


async def test_longest_key_with_longest_actor_ids(tmp_path: Path) -> None:
    actor = ActorId("n" * 128, "é" * 64)  # 128 + 128 UTF-8 bytes
    key = b"\xff" * 256
    async with _open(tmp_path) as storage:
        async with storage.transaction(actor) as txn:
            await txn.set(key, b"v")
            await txn.set(b"\x00" * 256, b"w")
        assert await storage.get(actor, key) == b"v"
        assert await storage.list_keys(actor, b"\xff" * 255) == [key]
        assert await storage.list_keys(actor) == [b"\x00" * 256, key]


# -- errors at the boundary -------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (lmdb.MapFullError("put", 0), StorageFullError),
        (lmdb.ReadersFullError("begin", 0), StorageUnavailableError),
        (lmdb.LockError("begin", 0), StorageUnavailableError),
        (lmdb.CorruptedError("get", 0), CorruptStateError),
        (lmdb.PanicError("commit", 0), StorageUnavailableError),
        (lmdb.BadValsizeError("put", 0), StorageError),
        (lmdb.DiskError("commit", 0), StorageFullError),
        (lmdb.ReadonlyError("commit", 0), StorageUnavailableError),
    ],
)
def test_every_lmdb_error_becomes_a_kelpie_error(
    error: lmdb.Error, expected: type[KelpieError]
) -> None:
    translated = translate(error, "testing")
    assert isinstance(translated, StorageError)
    assert type(translated) is expected
    assert not isinstance(translated, lmdb.Error)


def test_a_storage_inherited_across_fork_refuses_to_work(tmp_path: Path) -> None:
    storage = open_lmdb(f"lmdb://{tmp_path}")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        verdict = b"bad"
        try:
            storage._env._check_usable()
        except StorageClosedError:
            try:
                open_lmdb(f"lmdb://{tmp_path}")
            except ConfigError:
                verdict = b"ok"
        os.write(write_end, verdict)
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    assert os.read(read_end, 16) == b"ok"
    os.close(read_end)
    asyncio.run(storage.close())
