"""The three runtime-process scenarios of ``tests/scale_out`` on one PostgreSQL table.

Routing with leases, a SIGKILLed node whose actors are served elsewhere, and a
paused node that resumes as a zombie and commits nothing -- the same tests as
on Redis, LMDB and SQLite, with ``store_url`` a table on the session's server
(this module's fixture; ``start_nodes`` comes from the scale-out conftest).
"""

from __future__ import annotations

import uuid

import pytest

from kelpie.testing.postgres_server import PostgresServer, missing_postgres
from tests.scale_out.conftest import start_nodes
from tests.scale_out.test_runtime_processes import (
    test_a_killed_process_has_its_actors_served_elsewhere,
    test_a_paused_process_resumes_as_a_zombie_and_commits_nothing,
    test_three_processes_share_a_store_and_keep_the_ledger,
)

__all__ = [
    "start_nodes",
    "test_a_killed_process_has_its_actors_served_elsewhere",
    "test_a_paused_process_resumes_as_a_zombie_and_commits_nothing",
    "test_three_processes_share_a_store_and_keep_the_ledger",
]

pytestmark = pytest.mark.skipif(missing_postgres() is not None, reason=str(missing_postgres()))


@pytest.fixture
def store_url(postgres_server: PostgresServer) -> str:
    """One table shared by every runtime process of the test."""
    return postgres_server.url(table=f"so_{uuid.uuid4().hex[:10]}")
