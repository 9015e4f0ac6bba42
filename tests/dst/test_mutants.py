"""The simulator catches planted bugs (a small version of ``python -m kelpie.dst.mutants``).

The full run plants every mutant of ``kelpie.dst.mutant_list`` over 100 seeds
(see docs/dst.md, "Mutation testing"); here a few representative ones must be
caught within 30 seeds, the unmutated code must pass the same seeds, and every
mutant must still be plantable in today's code.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from kelpie.dst.mutant_list import MUTANTS, Mutant
from kelpie.dst.mutant_run import package_dir
from kelpie.dst.mutants import (
    DEFAULT_STORM,
    MutantError,
    find_mutants,
    locate,
    plant,
    render_table,
    run_mutants,
)

CI_SEEDS = range(30)
CI_MUTANTS = (  # one per area, each caught well within 30 seeds of today's storm
    "handover_waits_for_exited_only",  # runtime: mailbox hand-over (issue 13, bug 1)
    "no_rollback_on_error",  # runtime: memory rollback after a handler error
    "ryw_ignores_buffered_delete",  # storage layer: read-your-writes
    "memory_delete_stays_listed",  # memory backend: apply
    "batcher_leader_drops_error",  # group commit: outcome routing
    "batcher_failure_reported_ok",  # group commit: a whole batch failing (batch_fail)
    "lease_expiry_ignores_renewals",  # runtime: leases (the lease watch)
    "read_only_commit_unchecked",  # storage layer: read-only validation (issue 13, bug 2)
    "kv_delete_not_a_write",  # context: a delete-only invocation (blind_delete)
)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_every_mutant_original_text_occurs_exactly_once(mutant: Mutant) -> None:
    """A refactor that moves a mutant's code fails here, naming the mutant to update."""
    locate(mutant)  # raises MutantError naming the mutant otherwise
    assert mutant.replacement != mutant.original


def test_the_mutants_are_many_distinct_and_spread_over_the_code() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
    assert len(MUTANTS) >= 12
    assert len({(m.file, m.original) for m in MUTANTS}) == len(MUTANTS)
    files = {m.file for m in MUTANTS}
    for needed in ("runtime/", "storage/base.py", "storage/memory.py", "storage/group_commit.py"):
        assert any(f.startswith(needed) for f in files), needed


def test_a_moved_original_text_fails_loudly_with_the_mutant_name() -> None:
    ghost = Mutant("ghost", "storage/memory.py", "this text is nowhere", "x", "-", "memory")
    with pytest.raises(MutantError, match=r"ghost.*occurs 0 times"):
        locate(ghost)
    with pytest.raises(MutantError, match="unknown mutant"):
        find_mutants("no_such_mutant")


def test_plant_changes_exactly_the_copy() -> None:
    mutant = find_mutants("memory_prefix_scan_short")[0]
    with tempfile.TemporaryDirectory() as tmp:
        copy = plant(mutant, Path(tmp))
        planted = (copy / mutant.file).read_text(encoding="utf-8")
        assert mutant.replacement in planted and mutant.original not in planted
    assert mutant.original in (package_dir() / mutant.file).read_text(encoding="utf-8")


def test_representative_mutants_are_caught_and_the_clean_code_passes() -> None:
    seeds = list(CI_SEEDS)
    results = run_mutants(find_mutants(",".join(CI_MUTANTS)), seeds, DEFAULT_STORM, jobs=2)
    print(render_table(results, len(seeds)))
    clean, *planted = results
    assert clean.name == "(clean)"
    assert clean.how == "passed" and clean.seeds_run == len(seeds), clean.caught_by
    assert "kelpie-mutant-" in clean.imported_from  # the child ran the copy, not the repo
    for result in planted:
        assert result.caught, f"mutant {result.name} went unnoticed over seeds 0-29"
        assert result.how in ("invariant", "simulator"), result.caught_by
        print(f"{result.name}: caught by seed {result.first_failing_seed}")
