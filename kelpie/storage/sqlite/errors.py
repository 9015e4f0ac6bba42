"""Translate ``sqlite3`` exceptions into kelpie errors, at the boundary.

One mapping from SQLite's primary result codes, most specific first; every
``sqlite3.Error`` that leaves the backend goes through ``translate`` and is
raised ``from`` the original.
"""

from __future__ import annotations

import sqlite3

from kelpie.errors import (
    CorruptStateError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
)

__all__ = ["is_busy", "is_full", "translate"]

# SQLite primary result codes (https://www.sqlite.org/rescode.html).
_BUSY = 5
_LOCKED = 6
_NOMEM = 7
_READONLY = 8
_IOERR = 10
_CORRUPT = 11
_FULL = 13
_CANTOPEN = 14
_PROTOCOL = 15
_NOTADB = 26

_MAPPING: tuple[tuple[int, type[StorageError], str], ...] = (
    (_BUSY, StorageUnavailableError, "the SQLite file stayed locked past busy_timeout"),
    (_LOCKED, StorageUnavailableError, "the SQLite table is locked"),
    (_FULL, StorageFullError, "the disk under the SQLite file is full"),
    (_CORRUPT, CorruptStateError, "the SQLite file is corrupted"),
    (_NOTADB, CorruptStateError, "the file is not an SQLite database"),
    (_NOMEM, StorageUnavailableError, "SQLite ran out of memory"),
    (_READONLY, StorageUnavailableError, "SQLite may not write the file"),
    (_IOERR, StorageUnavailableError, "SQLite I/O failed"),
    (_CANTOPEN, StorageUnavailableError, "SQLite cannot open the file"),
    (_PROTOCOL, StorageUnavailableError, "SQLite's locking protocol failed"),
)


def _primary_code(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    text = str(exc).lower()  # an error raised without a code (rare): go by its message
    if "locked" in text or "busy" in text:
        return _BUSY
    if "disk is full" in text or "database or disk is full" in text:
        return _FULL
    if "malformed" in text:
        return _CORRUPT
    if "not a database" in text:
        return _NOTADB
    return -1


def is_busy(exc: sqlite3.Error) -> bool:
    """True if ``exc`` says another connection holds the lock (nothing was done)."""
    return _primary_code(exc) in (_BUSY, _LOCKED)


def is_full(exc: sqlite3.Error) -> bool:
    """True if ``exc`` says the disk (or the database's page limit) is full."""
    return _primary_code(exc) == _FULL


def translate(exc: sqlite3.Error, where: str) -> StorageError:
    """The kelpie error for ``exc``; raise it ``from exc``."""
    code = _primary_code(exc)
    for sqlite_code, kelpie_type, message in _MAPPING:
        if code == sqlite_code:
            return kelpie_type(f"{message} ({where}): {exc}")
    return StorageError(f"SQLite failed ({where}): {exc}")
