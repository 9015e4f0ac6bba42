"""The three runtime-process scenarios of ``test_runtime_processes`` on the embedded backends.

Several processes may share an LMDB directory or an SQLite file
(docs/scale-out.md, docs/backends/lmdb.md, docs/backends/sqlite.md): the same
routing, killed-node and paused-zombie tests run here with ``store_url`` one
of those instead of a Redis prefix (this module's fixture overrides the
conftest's).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scale_out.test_runtime_processes import (
    test_a_killed_process_has_its_actors_served_elsewhere,
    test_a_paused_process_resumes_as_a_zombie_and_commits_nothing,
    test_three_processes_share_a_store_and_keep_the_ledger,
)

__all__ = [
    "test_a_killed_process_has_its_actors_served_elsewhere",
    "test_a_paused_process_resumes_as_a_zombie_and_commits_nothing",
    "test_three_processes_share_a_store_and_keep_the_ledger",
]

_STORES = {"lmdb": "lmdb://{}/store", "sqlite": "sqlite://{}/store.db"}


@pytest.fixture(params=sorted(_STORES))
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One LMDB directory or SQLite file shared by every runtime process of the test."""
    return _STORES[request.param].format(tmp_path)
