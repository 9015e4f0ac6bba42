"""Scratch LMDB directories beside the store under test.

The raw LMDB baseline and the ``group_commit=False`` comparison need
environments of their own (LMDB shares one environment per directory in a
process). They live in temporary directories next to the store's directory,
on the same filesystem, so an fsync costs them what it costs the store; if
that parent cannot be written, the system's temporary directory is used.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from kelpie.storage.url import StorageURL

__all__ = ["scratch_dir_beside", "scratch_lmdb_url"]


def scratch_dir_beside(url: StorageURL, prefix: str) -> Path:
    """A new empty directory next to the ``lmdb://`` store ``url`` names."""
    store = Path(os.path.abspath((url.host or "") + url.path))
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=store.parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=prefix.lstrip(".")))


def scratch_lmdb_url(url: StorageURL, directory: Path) -> str:
    """``url`` (with all its options) pointing at ``directory`` instead."""
    return dataclasses.replace(url, host=None, port=None, path=str(directory)).render()
