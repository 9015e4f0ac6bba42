"""Transfers by ``ctx.send`` and reminders between processes SIGKILLed at random moments.

Real processes (``kelpie.testing.transfer_node``) on a real LMDB directory and a
real redis-server; ``kelpie.reliability.transfer_kills`` kills them, settles
what they left and judges the stored states against what their clients said.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kelpie.reliability.transfer_kills import (
    ReminderKillReport,
    TransferKillReport,
    kill_transfers,
    reminder_after_kill,
)
from kelpie.testing.redis_server import RedisServer


def _lmdb(directory: Path) -> str:
    return f"lmdb://{directory.resolve() / 'data'}"


def _assert_transfers(report: TransferKillReport, kills: int) -> None:
    print(report)
    assert report.violations == []
    assert report.kills >= kills
    assert report.debits_applied > 100
    assert report.credits_applied == report.debits_applied
    assert report.in_doubt > 0  # some debits were cut off by a kill
    assert report.reminders_opened > 0
    assert report.reminders_fired == report.reminders_opened
    assert report.clock_processes >= 2  # the repeating reminder outlived its setter


def _assert_reminders(report: ReminderKillReport) -> None:
    print(report)
    assert report.violations == []
    assert len(report.once_fired_by) == 1
    assert report.clock_fires_after_kill >= 4
    assert len(report.beats_by_process) >= 2  # fired on after the setter's kill, twice


def test_transfers_between_sigkilled_processes_on_lmdb_conserve_money_once_each(
    tmp_path: Path,
) -> None:
    report = kill_transfers(_lmdb(tmp_path), tmp_path, 8, seed=11)
    _assert_transfers(report, 8)


def test_transfers_between_sigkilled_processes_on_redis_conserve_money_once_each(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    report = kill_transfers(redis_server.url, tmp_path, 8, seed=12)
    _assert_transfers(report, 8)


def test_reminder_set_before_a_sigkill_fires_once_after_restart_on_lmdb(tmp_path: Path) -> None:
    _assert_reminders(reminder_after_kill(_lmdb(tmp_path), tmp_path, seed=13))


def test_reminder_set_before_a_sigkill_fires_once_after_restart_on_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    _assert_reminders(reminder_after_kill(redis_server.url, tmp_path, seed=14))


@pytest.mark.soak
def test_soak_a_hundred_sigkilled_transfer_processes_on_lmdb(tmp_path: Path) -> None:
    report = kill_transfers(_lmdb(tmp_path), tmp_path, 100, seed=21, nodes=3)
    _assert_transfers(report, 100)


@pytest.mark.soak
def test_soak_a_hundred_sigkilled_transfer_processes_on_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    report = kill_transfers(redis_server.url, tmp_path, 100, seed=22, nodes=3)
    _assert_transfers(report, 100)


def test_transfers_between_sigkilled_nodes_with_leases_on_lmdb_conserve_money_once_each(
    tmp_path: Path,
) -> None:
    # A killed node's leases stay until they expire: the others wait, then take over
    # its actors and deliver its outbox.
    report = kill_transfers(_lmdb(tmp_path), tmp_path, 6, seed=15, lease_seconds=0.5)
    _assert_transfers(report, 6)


def test_reminder_set_before_a_sigkill_fires_once_on_the_next_node_with_leases_on_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # The killed node's lease on the actor expires before the next node fires.
    _assert_reminders(reminder_after_kill(redis_server.url, tmp_path, seed=16, lease_seconds=0.5))
