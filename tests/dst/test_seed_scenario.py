"""The seed scenario, simulation first: the atomicity gap is caught, kelpie has none.

Under crash-during-commit, a context that writes KV straight to storage and
commits the state separately (``kelpie.dst.naive``) leaves the KV balance and
the state balance different; the kelpie runtime, which commits both in one
transaction, never does.
"""

from __future__ import annotations

from kelpie.dst.faults import FaultKind, FaultPlan, FaultSpec
from kelpie.dst.harness import SimConfig, run_seed
from kelpie.dst.storm import replay_commands
from kelpie.dst.workloads import BankWorkload
from tests.dst.conftest import dst_seeds

CRASH_DURING_COMMIT = FaultPlan.of(FaultSpec(FaultKind.CRASH_DURING_COMMIT, 0.2))


def test_naive_direct_write_context_breaks_kv_equals_state() -> None:
    caught = []
    for seed in dst_seeds(range(10)):
        result = run_seed(
            BankWorkload, SimConfig(seed=seed, faults=CRASH_DURING_COMMIT, runtime="naive")
        )
        print(f"seed {seed}: naive runtime, {len(result.violations)} violations")
        assert result.faults.get("crash_during_commit", 0) > 0
        if result.violations:
            caught.append(seed)
            assert any("KV balance" in v and "but state" in v for v in result.violations)
            print("  " + result.violations[0])
            print("  replay: " + " | ".join(replay_commands(seed, result_config(seed), "bank")))
    assert caught, "the naive runtime's atomicity gap went unnoticed"


def result_config(seed: int) -> SimConfig:
    return SimConfig(seed=seed, faults=CRASH_DURING_COMMIT, runtime="naive")


def test_kelpie_runtime_keeps_kv_equal_to_state_under_the_same_faults() -> None:
    for seed in dst_seeds(range(10)):
        result = run_seed(BankWorkload, SimConfig(seed=seed, faults=CRASH_DURING_COMMIT))
        print(f"seed {seed}: kelpie runtime, faults {result.faults}")
        assert result.faults.get("crash_during_commit", 0) > 0
        assert result.violations == [], result.violations


def test_a_failing_seed_replays_exactly() -> None:
    seed = dst_seeds([3])[0]
    config = SimConfig(seed=seed, faults=CRASH_DURING_COMMIT, runtime="naive")
    first = run_seed(BankWorkload, config)
    again = run_seed(BankWorkload, config)
    print(f"seed {seed}: {len(first.violations)} violations, digest {first.digest[:16]}")
    assert first.violations
    assert again.digest == first.digest
    assert again.violations == first.violations
