"""A ledger writer on LMDB SIGKILLed at random moments; two writers on one directory; a full map."""

from __future__ import annotations

from pathlib import Path

import pytest

from kelpie.errors import StorageFullError
from kelpie.identity import ActorId
from kelpie.reliability.lmdb_kills import kill_writers, two_writers
from kelpie.storage.registry import open_storage

pytest.importorskip("lmdb")


def test_killed_writers_leave_no_torn_commit_and_lose_no_acknowledged_one(tmp_path: Path) -> None:
    report = kill_writers(tmp_path, 10, seed=1, sync=True)
    print(report)
    assert report.kills == 10
    assert report.acknowledged > 0
    assert report.violations == []
    assert report.lost_acks == 0


def test_killed_writers_without_sync_still_lose_nothing_to_a_process_kill(tmp_path: Path) -> None:
    # sync=false risks the last commits on a power loss, not on a process kill:
    # the page cache outlives the process.
    report = kill_writers(tmp_path, 3, seed=2, sync=False)
    assert report.kills == 3
    assert report.violations == []


def test_two_processes_writing_one_directory_lose_no_update(tmp_path: Path) -> None:
    report = two_writers(tmp_path, ops=150, seed=4)
    print(report)
    assert report.violations == []
    assert report.acknowledged > 0


async def test_full_map_grows_then_fails_with_nothing_written(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path / 'db'}"
    actor, other = ActorId("full", "a"), ActorId("full", "b")
    storage = open_storage(url, map_size=256 * 1024, max_map_size=1024 * 1024)
    committed = 0
    try:
        await storage.set(other, b"k", b"keep")
        with pytest.raises(StorageFullError) as info:
            for n in range(100):
                async with storage.transaction(actor) as txn:
                    await txn.set(b"k%d" % n, b"v" * 50_000)
                    await txn.set(b"n", b"%d" % n)
                committed += 1
        print(info.value)
        assert committed * 50_000 > 256 * 1024  # the map grew past its initial size
        assert len(await storage.list_keys(actor)) == committed + 1
        # nothing of the failed commit landed
        assert await storage.get(actor, b"n") == b"%d" % (committed - 1)
        assert await storage.get(other, b"k") == b"keep"
        await storage.set(actor, b"n", b"small")  # a small write still fits
    finally:
        await storage.close()
    reopened = open_storage(url, map_size=256 * 1024, max_map_size=1024 * 1024)
    try:
        assert len(await reopened.list_keys(actor)) == committed + 1
        assert await reopened.get(actor, b"n") == b"small"
    finally:
        await reopened.close()


@pytest.mark.soak
def test_soak_a_thousand_killed_writers(tmp_path: Path) -> None:
    report = kill_writers(tmp_path, 1000, seed=0)
    assert report.kills == 1000
    assert report.violations == []
