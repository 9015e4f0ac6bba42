"""Loads kelpie's pytest plugin: ``--storage-url`` and the storage fixtures."""

pytest_plugins = ["kelpie.testing.plugin"]
