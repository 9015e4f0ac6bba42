"""Several runtimes on one store, zombies, chaos and the idempotency window (issue 13)."""

from __future__ import annotations

from kelpie.dst import SimConfig, run_seed
from kelpie.dst.client import KeyWindow
from kelpie.dst.cluster import Topology
from kelpie.dst.process import RUNTIMES
from kelpie.dst.workloads import WORKLOADS
from kelpie.identity import ActorId
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


def test_two_handlers_of_one_actor_running_at_once_in_one_process_is_a_violation() -> None:
    """The hand-over bug of issue 13 (a second activation while the first drains), planted."""
    import asyncio
    import random
    from dataclasses import dataclass
    from typing import Any

    from kelpie.actor import Actor, ActorContext
    from kelpie.dst import Simulation, WorkloadBase

    @dataclass
    class Box:
        value: int = 0

    class Slow(Actor[Box]):
        state_type = Box

        async def nap(self, ctx: ActorContext[Box], payload: Any) -> int:
            await asyncio.sleep(1)
            return ctx.state.value

    class TwoAtOnce(WorkloadBase):
        name = "two-at-once"

        async def setup(self, sim: Simulation) -> None:
            sim.register("slow", Slow)
            self.actor = sim.actor("slow", "x")

        async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
            runtime: Any = sim.processes[0].runtime
            first = asyncio.ensure_future(sim.invoke(self.actor, "nap", process=0))
            await asyncio.sleep(0.1)
            runtime._mailboxes.pop(self.actor)  # the plant: the next call gets a new mailbox
            await sim.invoke(self.actor, "nap", process=0)
            await first

    config = SimConfig(seed=0, runtimes=1, leases=False, clients=1, steps=1, chaos=False)
    result = run_seed(TwoAtOnce, config)
    print(result.violations)
    assert any("two activations of one actor at once" in v for v in result.violations)
