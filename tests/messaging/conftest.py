"""The messaging tests run on memory, LMDB, SQLite, a real redis-server and PostgreSQL."""

from __future__ import annotations

import pytest

BACKENDS = ["memory", "lmdb", "redis", "sqlite", "postgres"]

on_backends = pytest.mark.parametrize("storage_backend", BACKENDS, indirect=True)
"""Run a test on each backend of ``BACKENDS`` (the ``storage`` fixture opens it)."""
