"""The three-runtime-process tests of ``tests/scale_out``, on the Redis Cluster.

Same tests, same assertions; only ``store_url`` differs (``tests/cluster/conftest.py``).
"""

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
