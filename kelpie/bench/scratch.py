"""Scratch LMDB directories beside the store under test.

The raw LMDB baseline needs an environment of its own (py-lmdb opens a
directory once per process, and kelpie's storage holds it). It lives in
a temporary directory next to the store's, on the same filesystem, so an
fsync costs it what it costs the store; if that parent cannot be written, the
system's temporary directory is used.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from kelpie.storage.url import StorageURL

__all__ = ["scratch_dir_beside"]


def scratch_dir_beside(url: StorageURL, prefix: str) -> Path:
    """A new empty directory next to the ``lmdb://`` store ``url`` names."""
    store = Path(os.path.abspath((url.host or "") + url.path))
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=store.parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=prefix.lstrip(".")))
