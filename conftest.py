"""Loads kelpie's pytest plugin (``--storage-url``, storage fixtures) and Redis test fixtures."""

import pytest

pytest_plugins = ["kelpie.testing.plugin", "tests.redis_support"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Soak runs are long by design: no per-test timeout (pyproject's ``timeout`` is 600 s)."""
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(pytest.mark.timeout(0))
