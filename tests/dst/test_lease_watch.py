"""The lease watch reports a takeover of a lease its owner kept renewing, and only that."""

from __future__ import annotations

from kelpie.actor.codec import pack_record
from kelpie.actor.keys import STATE_KEY
from kelpie.dst.lease_watch import LeaseWatch
from kelpie.identity import ActorId

A = ActorId("acct", "a")


def _watch() -> tuple[LeaseWatch, list[float], list[str], list[str]]:
    clock = [0.0]
    reports: list[str] = []
    counted: list[str] = []
    watch = LeaseWatch(1.0, lambda: clock[0], reports.append, counted.append)
    return watch, clock, reports, counted


def _commit(watch: LeaseWatch, seq: int, owner: str) -> None:
    watch.observe(A, {STATE_KEY: pack_record(seq, 0, "json", b"{}", owner), b"\x01k": b"v"})


def test_a_takeover_after_the_owner_stopped_renewing_is_fine() -> None:
    watch, clock, reports, counted = _watch()
    _commit(watch, 1, "node1")
    clock[0] = 0.3
    _commit(watch, 2, "node1")  # a renewal
    clock[0] = 1.3
    _commit(watch, 3, "node2")  # exactly one lease after the last renewal
    assert reports == []
    assert counted == ["lease_takeover"]


def test_a_takeover_while_the_owner_renews_is_reported() -> None:
    watch, clock, reports, _ = _watch()
    _commit(watch, 1, "node1")
    clock[0] = 0.9
    _commit(watch, 2, "node1")  # renewed...
    clock[0] = 1.2
    _commit(watch, 3, "node2")  # ...yet taken 0.3 s later
    assert len(reports) == 1
    assert "node 'node2' took over the lease of node 'node1'" in reports[0]


def test_a_hand_over_through_a_release_and_other_writes_are_not_takeovers() -> None:
    watch, clock, reports, counted = _watch()
    _commit(watch, 1, "node1")
    clock[0] = 0.1
    _commit(watch, 2, "")  # released on deactivation
    clock[0] = 0.2
    _commit(watch, 3, "node2")
    watch.observe(A, {b"\x01k": None})  # a commit without the state record
    watch.observe(A, {STATE_KEY: b"not a record"})
    assert reports == [] and counted == []
