"""``open_sqlite``: parse a ``sqlite://`` URL and its options into a ``SQLiteStorage``."""

from __future__ import annotations

import os
from typing import Any

from kelpie.errors import ConfigError
from kelpie.storage.options import as_bool, as_int, as_str, merge_options
from kelpie.storage.sqlite.database import SQLiteOptions
from kelpie.storage.sqlite.storage import SQLiteStorage
from kelpie.storage.url import StorageURL

__all__ = ["open_sqlite"]

_SYNC_MODES = ("full", "normal")

_OPTIONS = {
    "sync": as_str,
    "busy_timeout": as_int,
    "group_commit": as_bool,
    "max_batch": as_int,
}


def file_path(parsed: StorageURL) -> str:
    """The absolute path of the database file a ``sqlite://`` URL names."""
    host = parsed.host or ""
    if host not in ("", ".", ".."):
        raise ConfigError(
            f"sqlite:// URLs name a file: sqlite:///abs/path.db or sqlite://./rel.db, "
            f"not a host ({host!r})"
        )
    path = host + parsed.path
    if not path or path.endswith("/"):
        raise ConfigError(
            f"the sqlite:// URL {parsed.render()!r} names no file: "
            f"sqlite:///abs/path.db or sqlite://./rel.db"
        )
    absolute = os.path.abspath(path)
    if os.path.dirname(absolute) == absolute:
        raise ConfigError(f"the sqlite:// URL {parsed.render()!r} names the filesystem root")
    if os.path.isdir(absolute):
        raise ConfigError(
            f"the sqlite:// URL {parsed.render()!r} names a directory ({absolute}); "
            f"name a database file in it, e.g. sqlite://{absolute}/kelpie.db"
        )
    return absolute


def sqlite_options(parsed: StorageURL, kwargs: dict[str, Any]) -> SQLiteOptions:
    values = merge_options("sqlite", parsed.options, kwargs, _OPTIONS)
    if "sync" in values:
        values["sync"] = values["sync"].strip().lower()
        if values["sync"] not in _SYNC_MODES:
            raise ConfigError("option 'sync' of sqlite:// must be one of " + ", ".join(_SYNC_MODES))
    options = SQLiteOptions(**values)
    if options.busy_timeout < 0:
        raise ConfigError("option 'busy_timeout' of sqlite:// must be at least 0 (milliseconds)")
    if options.max_batch < 1:
        raise ConfigError("option 'max_batch' of sqlite:// must be at least 1")
    return options


def open_sqlite(url: str, **options: Any) -> SQLiteStorage:
    """Factory for ``sqlite:///abs/path.db`` and ``sqlite://./rel.db``; creates the file
    (and its directory) if missing.

    Options (URL query or keywords): ``sync`` (``full``, the default: every
    acknowledged commit survives a power loss; ``normal``: faster, the last
    commits may be lost on a power loss but not on a process crash),
    ``busy_timeout`` (milliseconds to wait for another process's lock,
    default 5000), ``group_commit`` (default true) and ``max_batch`` (default 128).
    """
    parsed = StorageURL.parse(url)
    resolved = sqlite_options(parsed, options)
    path = file_path(parsed)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the directory of {path}: {exc}") from exc
    return SQLiteStorage(path, resolved)
