"""Loads kelpie's pytest plugin (``--storage-url``, storage fixtures) and Redis test fixtures."""

pytest_plugins = ["kelpie.testing.plugin", "tests.redis_support"]
