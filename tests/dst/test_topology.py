"""Several runtimes on one store, zombies, chaos and the idempotency window (issue 13)."""

from __future__ import annotations

from kelpie.actor.id import ActorId
from kelpie.dst import SimConfig, run_seed
from kelpie.dst.client import KeyWindow
from kelpie.dst.cluster import Topology
from kelpie.dst.process import RUNTIMES
from kelpie.dst.workloads import WORKLOADS
from tests.dst.conftest import dst_seeds

A = ActorId("acct", "a")


def test_topology_is_drawn_per_seed_and_pinned_options_are_kept() -> None:
    kind = RUNTIMES["kelpie"]
    drawn = {Topology.draw(SimConfig(seed=s), kind) for s in range(40)}
    assert {t.runtimes for t in drawn} == {1, 2, 3}
    assert {t.leases for t in drawn} == {True, False}
    assert all(t.pauses == (t.runtimes > 1) for t in drawn)
    pinned = Topology.draw(SimConfig(seed=5, runtimes=3, leases=True, idle_timeout=0), kind)
    assert (pinned.runtimes, pinned.leases, pinned.idle_timeout) == (3, True, None)
    same = Topology.draw(SimConfig(seed=5), kind)
    assert pinned.lease_seconds == same.lease_seconds  # pinning one keeps the others' draws
    naive = Topology.draw(SimConfig(seed=5, runtimes=3), RUNTIMES["naive"])
    assert (naive.runtimes, naive.leases, naive.chaos) == (1, False, False)


def test_a_key_is_not_retried_once_the_window_may_have_moved_past_it() -> None:
    window = KeyWindow(3)
    window.start(A, "open")  # open when "k" starts: it may land after k
    window.start(A, "k")
    assert window.bound(A, "k") == 1 and window.may_retry(A, "k")
    window.finish(A)  # k's first attempt ends (say, outcome unknown)
    window.start(A, "k")  # k's retry does not count against k
    window.finish(A)
    assert window.bound(A, "k") == 1
    window.start(A, "x")
    window.finish(A)
    assert window.bound(A, "k") == 2 and window.may_retry(A, "k")
    window.start(A, "y")  # a third keyed commit may have landed after k: k may be evicted
    assert window.bound(A, "k") == 3 and not window.may_retry(A, "k")
    assert window.bound(A, "y") == 1  # "open" is still open when y starts


def test_two_runtimes_with_leases_and_pauses_reject_zombie_commits() -> None:
    """Zombies resume with working handles: the fence and the version check refuse them."""
    totals: dict[str, int] = {}
    for seed in dst_seeds(range(8)):
        config = SimConfig(seed=seed, runtimes=2, leases=True)
        result = run_seed(WORKLOADS["ledger"], config)
        print(f"seed {seed} ({result.topology}): {result.coverage}")
        assert result.ok, f"seed {seed}: {result.violations[:3]}"
        for path, n in result.coverage.items():
            totals[path] = totals.get(path, 0) + n
    if len(dst_seeds(range(8))) > 1:
        for path in ("pause", "zombie_rejected", "lease_redirect", "conflict", "attempt_timeout"):
            assert totals.get(path, 0) > 0, f"{path} never happened: {totals}"


def test_chaos_deactivations_and_idle_evictions_happen_without_breaking_anything() -> None:
    totals: dict[str, int] = {}
    for seed in dst_seeds(range(6)):
        config = SimConfig(seed=seed, runtimes=1, idle_timeout=0.05, crashes=True)
        result = run_seed(WORKLOADS["ledger"], config)
        print(f"seed {seed} ({result.topology}): {result.coverage}")
        assert result.ok, f"seed {seed}: {result.violations[:3]}"
        for path, n in result.coverage.items():
            totals[path] = totals.get(path, 0) + n
    if len(dst_seeds(range(6))) > 1:
        assert totals.get("chaos_deactivation", 0) > 0 and totals.get("idle_eviction", 0) > 0
        assert totals.get("idempotency_eviction", 0) > 0
