"""A ledger writer on an SQLite file SIGKILLed at random moments; two writers on one file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kelpie.reliability.lmdb_kills import kill_writers, two_writers


def test_killed_sqlite_writers_leave_no_torn_commit_and_lose_no_acknowledged_one(
    tmp_path: Path,
) -> None:
    report = kill_writers(tmp_path, 10, seed=1, sync=True, backend="sqlite")
    print(report)
    assert report.kills == 10
    assert report.acknowledged > 0
    assert report.violations == []
    assert report.lost_acks == 0


def test_killed_sqlite_writers_with_sync_normal_lose_nothing_to_a_process_kill(
    tmp_path: Path,
) -> None:
    # sync=normal risks the last commits on a power loss, not on a process kill.
    report = kill_writers(tmp_path, 3, seed=2, sync=False, backend="sqlite")
    assert report.kills == 3
    assert report.violations == []
    assert report.lost_acks == 0


def test_two_processes_writing_one_sqlite_file_lose_no_update(tmp_path: Path) -> None:
    report = two_writers(tmp_path, ops=150, seed=4, backend="sqlite")
    print(report)
    assert report.violations == []
    assert report.acknowledged > 0


@pytest.mark.soak
def test_soak_a_thousand_killed_sqlite_writers(tmp_path: Path) -> None:
    report = kill_writers(tmp_path, 1000, seed=0, backend="sqlite")
    assert report.kills == 1000
    assert report.violations == []
    assert report.lost_acks == 0
