"""The simulator runs both of the runtime's write paths (ADR 0023).

kelpie's own transactions take a write without a coroutine (``buffer_set``,
``write_buffer``); any other gets ``await txn.set``. Each simulated process
draws one from its seed, so bugs on either path are within the storm's
reach (mutants ``riding_mark_not_written``, ``outbox_entry_not_buffered``).
"""

from __future__ import annotations

from kelpie.dst import SimConfig, coverage, run_seed
from kelpie.dst.workloads import WORKLOADS
from tests.dst.conftest import dst_seeds


def test_processes_draw_both_write_paths_and_a_seed_replays_its_draw() -> None:
    totals = {coverage.BUFFERED_WRITES: 0, coverage.COROUTINE_WRITES: 0}
    seeds = dst_seeds(range(8))
    for seed in seeds:
        config = SimConfig(seed=seed, crashes=True)
        first = run_seed(WORKLOADS["transfers"], config)
        again = run_seed(WORKLOADS["transfers"], config)
        paths = {path: first.coverage.get(path, 0) for path in totals}
        print(f"seed {seed} ({first.topology}): {paths}")
        assert first.ok, f"seed {seed}: {first.violations[:3]}"
        assert paths == {path: again.coverage.get(path, 0) for path in totals}
        assert sum(paths.values()) >= 1  # every process drew one
        for path, n in paths.items():
            totals[path] += n
    if len(seeds) > 1:
        assert all(totals.values()), f"a write path was never simulated: {totals}"
