"""The conformance suite fails a backend with any one of these bugs (it is not vacuous)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from backends_tests.broken_backends import BUGS
from kelpie.storage.registry import open_storage
from kelpie.testing.backends import StoreHandle
from kelpie.testing.conformance.test_model import StorageModelMachine

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("bug", BUGS)
def test_the_example_based_suite_fails_a_backend_with_the_bug(
    pytester: pytest.Pytester, bug: str
) -> None:
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "kelpie.testing.conformance",
        "-p",
        "kelpie.testing.plugin",
        "-p",
        "backends_tests.broken_backends",
        f"--storage-url=broken-{bug}://{uuid.uuid4().hex}",
        "-k",
        "not TestModel",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, outcomes
    assert outcomes.get("passed", 0) >= 1, outcomes


@pytest.mark.parametrize(
    ("bug", "caught_by"),
    [
        ("versions-repeat", "test_delete_then_recreate_with_as_many_commits_still_fails_*"),
        ("versions-repeat", "test_a_transaction_that_read_an_absent_actor_conflicts_*"),
        ("delete-keeps-a-key", "test_delete_actor_removes_every_key_*"),
    ],
)
def test_the_lifecycle_tests_fail_a_backend_whose_delete_actor_is_broken(
    pytester: pytest.Pytester, bug: str, caught_by: str
) -> None:
    """Each broken ``delete_actor`` fails the very test written for its guarantee (the
    generic suite would also fail on other tests: that alone would prove nothing)."""
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "kelpie.testing.conformance.test_actor_lifecycle",
        "-p",
        "kelpie.testing.plugin",
        "-p",
        "backends_tests.broken_backends",
        f"--storage-url=broken-{bug}://{uuid.uuid4().hex}",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, outcomes
    assert outcomes.get("passed", 0) >= 1, outcomes  # listing and the rest still work
    result.stdout.fnmatch_lines([f"FAILED *::TestActorLifecycle::{caught_by}"])


@pytest.mark.parametrize(
    "bug", ["lost-update", "partial-commit", "unsorted-keys", "empty-is-absent"]
)
def test_the_model_based_test_fails_a_backend_with_the_bug(bug: str) -> None:
    name = uuid.uuid4().hex
    handle = StoreHandle(f"broken-{bug}", lambda: open_storage(f"broken-{bug}://{name}"))

    class Machine(StorageModelMachine):
        def __init__(self) -> None:
            super().__init__(handle)

    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=500,
                stateful_step_count=50,
                deadline=None,
                database=None,
                # A fixed search: a random one missed the lost update once in CI.
                derandomize=True,
                phases=[Phase.generate],  # no shrinking: finding the bug is enough
                suppress_health_check=list(HealthCheck),
                print_blob=False,
            ),
        )
