"""One SQLite file: its schema, a reader connection, and a writer thread with its own.

Reads run on the caller's thread on the reader connection: each is one
statement, hence one WAL snapshot, and never waits for the writer (WAL lets
readers and one writer work at once). Commits run on the writer thread, which
owns the writer connection: a batch of commits is one ``BEGIN IMMEDIATE`` …
``COMMIT`` (one fsync with ``sync=full``), each commit checking its own
actor's version inside it, so one commit's conflict never fails the others.
Every ``sqlite3.Error`` is translated here (``errors.translate``).

``delete_actor`` is a job of the same batches. It removes the actor's rows
and moves the ``deletes`` row of ``kelpie_meta`` past the actor's version; a
new actor's versions start above it, so no version ever comes back (ADR
0013). A file written before that row existed reads it as 0: the layout is
unchanged (schema version 1). ``list_actors`` reads ``kelpie_versions`` in
``ActorId`` order (``kelpie.storage.encoded_order``), minus the actors with
no record left, which triggers keep in ``kelpie_empty`` (added to files of
earlier releases, and filled, the first time this release opens them; the
triggers then serve every writer).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import TypeAlias, TypeVar

from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    CorruptStateError,
    StorageClosedError,
    StorageError,
    StorageFullError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.base import Writes
from kelpie.storage.encoded_order import list_encoded
from kelpie.storage.group_commit import DEFAULT_MAX_BATCH
from kelpie.storage.sqlite.errors import is_busy, is_full, translate
from kelpie.storage.writer_thread import WriterThread

__all__ = [
    "EMPTY_MARKS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "CommitJob",
    "Database",
    "DeleteJob",
    "Outcome",
    "SQLiteOptions",
]

T = TypeVar("T")

SCHEMA_VERSION = 1
"""The table layout this module writes and reads (docs/backends/sqlite.md)."""

SCHEMA = """\
CREATE TABLE IF NOT EXISTS kelpie_meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kelpie_records (
    actor BLOB NOT NULL,   -- ActorId.encode()
    key   BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (actor, key)
);
CREATE TABLE IF NOT EXISTS kelpie_versions (
    actor   BLOB PRIMARY KEY,   -- ActorId.encode()
    version INTEGER NOT NULL    -- bumped by every commit that writes the actor
) WITHOUT ROWID;
"""

EMPTY_MARKS = (
    # The actors that have a version row but no record: list_actors skips them
    # without a probe of kelpie_records per listed actor. Triggers keep it, so
    # every writer of the file does, an earlier release's included.
    "CREATE TABLE kelpie_empty (actor BLOB PRIMARY KEY) WITHOUT ROWID",
    "INSERT INTO kelpie_empty SELECT actor FROM kelpie_versions AS v"
    " WHERE NOT EXISTS (SELECT 1 FROM kelpie_records AS r WHERE r.actor = v.actor)",
    "CREATE TRIGGER kelpie_record_added AFTER INSERT ON kelpie_records"
    " BEGIN DELETE FROM kelpie_empty WHERE actor = NEW.actor; END",
    "CREATE TRIGGER kelpie_record_removed AFTER DELETE ON kelpie_records"
    " WHEN NOT EXISTS (SELECT 1 FROM kelpie_records WHERE actor = OLD.actor)"
    " AND EXISTS (SELECT 1 FROM kelpie_versions WHERE actor = OLD.actor)"
    " BEGIN INSERT OR IGNORE INTO kelpie_empty (actor) VALUES (OLD.actor); END",
    "CREATE TRIGGER kelpie_version_added AFTER INSERT ON kelpie_versions"
    " WHEN NOT EXISTS (SELECT 1 FROM kelpie_records WHERE actor = NEW.actor)"
    " BEGIN INSERT OR IGNORE INTO kelpie_empty (actor) VALUES (NEW.actor); END",
    "CREATE TRIGGER kelpie_version_removed AFTER DELETE ON kelpie_versions"
    " BEGIN DELETE FROM kelpie_empty WHERE actor = OLD.actor; END",
)
"""``kelpie_empty`` and its triggers, added (and filled) once to a file that lacks them."""

_DELETES = "(SELECT value FROM kelpie_meta WHERE name = 'deletes')"
_GET = (
    "SELECT (SELECT version FROM kelpie_versions WHERE actor = ?1),"
    " (SELECT value FROM kelpie_records WHERE actor = ?1 AND key = ?2), " + _DELETES
)
# One statement, so the keys and the version come from one snapshot; the key
# range is an index range scan on the primary key (actor, key).
_KEYS_FROM = (
    "SELECT NULL, version, NULL FROM kelpie_versions WHERE actor = ?1"
    " UNION ALL SELECT NULL, NULL, value FROM kelpie_meta WHERE name = 'deletes'"
    " UNION ALL SELECT key, NULL, NULL FROM kelpie_records WHERE actor = ?1 AND key >= ?2"
)
_KEYS_BETWEEN = _KEYS_FROM + " AND key < ?3"
_VERSION = "SELECT version FROM kelpie_versions WHERE actor = ?"
_STATE = "SELECT (SELECT version FROM kelpie_versions WHERE actor = ?), " + _DELETES
_WRITER_DELETES = "SELECT value FROM kelpie_meta WHERE name = 'deletes'"
_DELETE_RECORDS = "DELETE FROM kelpie_records WHERE actor = ?"
_DELETE_VERSION = "DELETE FROM kelpie_versions WHERE actor = ?"
_MOVE_DELETES = (
    "INSERT INTO kelpie_meta (name, value) VALUES ('deletes', ?1 + 1)"
    " ON CONFLICT (name) DO UPDATE SET value = max(value, ?1) + 1"
)
_FIRST_FROM = "SELECT actor FROM kelpie_versions WHERE actor >= ? ORDER BY actor LIMIT 1"
_SCAN = (
    "SELECT actor FROM kelpie_versions WHERE actor >= ? AND actor < ?"
    " AND actor NOT IN (SELECT actor FROM kelpie_empty) ORDER BY actor"
)
_HAS_EMPTY_MARKS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kelpie_empty'"
_UPSERT = (
    "INSERT INTO kelpie_records (actor, key, value) VALUES (?, ?, ?)"
    " ON CONFLICT (actor, key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM kelpie_records WHERE actor = ? AND key = ?"
_BUMP = (
    "INSERT INTO kelpie_versions (actor, version) VALUES (?, ?)"
    " ON CONFLICT (actor) DO UPDATE SET version = excluded.version"
)


def upper_bound(prefix: bytes) -> bytes | None:
    """The least key greater than every key starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


@dataclass(frozen=True)
class SQLiteOptions:
    """The options of a ``sqlite://`` storage (see docs/backends/sqlite.md)."""

    sync: str = "full"
    """``full``: fsync at every commit (batch); ``normal``: a power loss may lose the last ones."""
    busy_timeout: int = 5000
    """Milliseconds to wait for another connection's lock before ``StorageUnavailableError``."""
    group_commit: bool = True
    max_batch: int = DEFAULT_MAX_BATCH


@dataclass(slots=True)
class CommitJob:
    """One transaction's commit: its writes, and the actor version it read (None: read nothing).

    ``read_deletes``: the deletes counter when the transaction read the actor as absent.
    """

    actor: ActorId
    encoded: bytes
    read_version: int | None
    read_deletes: int
    writes: Writes


@dataclass(slots=True)
class DeleteJob:
    """``delete_actor``: remove every row of the actor, in the same batches as commits."""

    actor: ActorId
    encoded: bytes


_WAL_SWITCH_ATTEMPTS = 20
"""Tries at the WAL switch on a new file, each after a wait for the file (busy_timeout)."""

Outcome: TypeAlias = "BaseException | None"
"""A commit's outcome: ``None`` once committed, or the exception its caller gets."""


def _connect(path: str, options: SQLiteOptions) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path,
        timeout=options.busy_timeout / 1000,  # SQLite's busy handler: retry until then
        isolation_level=None,  # autocommit: BEGIN and COMMIT are ours
        check_same_thread=False,  # each connection is used by one thread at a time
        cached_statements=64,
    )
    connection.execute(f"PRAGMA busy_timeout = {int(options.busy_timeout)}")
    return connection


class Database:
    """An open kelpie SQLite file: the reader connection and the writer thread."""

    def __init__(self, path: str, options: SQLiteOptions) -> None:
        self.path = path
        self.options = options
        try:
            self._writer_db = _connect(path, options)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the SQLite file {path}: {exc}") from exc
        try:
            self._init_schema()
            self._reader = _connect(path, options)
            self._reader.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            self._writer_db.close()
            raise translate(exc, f"opening {path}") from exc
        except BaseException:
            self._writer_db.close()
            raise
        self._read_lock = threading.Lock()
        self._writer = WriterThread(f"kelpie-sqlite-writer {path}")
        self.inherited = False  # set in a child after fork(): never use it there
        _open_databases.add(self)

    def _check_usable(self) -> None:
        if self.inherited:
            raise StorageClosedError(
                f"the SQLite storage at {self.path} was opened before fork(); "
                "open a new one in this process"
            )

    def _switch_to_wal(self) -> str:
        """Put the file in WAL mode (kept in the file: once per file); the mode it is in.

        Processes opening a new file at the same moment race for the switch,
        which needs the file to themselves, and SQLite answers "database is
        locked" at once rather than calling the busy handler where waiting
        could deadlock. So after such an answer the opener waits for the file
        as for any lock, through the busy handler (``busy_timeout``), by taking
        and releasing it, and tries again; a file in WAL mode needs no switch.
        """
        db = self._writer_db
        for attempt in range(_WAL_SWITCH_ATTEMPTS):
            try:
                mode = str(db.execute("PRAGMA journal_mode").fetchall()[0][0]).lower()
                if mode != "wal":
                    mode = str(db.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]).lower()
                return mode
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or attempt == _WAL_SWITCH_ATTEMPTS - 1:
                    raise
            db.execute("BEGIN EXCLUSIVE")  # waits up to busy_timeout, or raises busy
            db.execute("COMMIT")
        raise AssertionError("unreachable")  # pragma: no cover

    def _init_schema(self) -> None:
        db = self._writer_db
        mode = self._switch_to_wal()
        if mode != "wal":
            raise ConfigError(f"the SQLite file {self.path} cannot use WAL mode ({mode})")
        db.execute(f"PRAGMA synchronous = {self.options.sync.upper()}")
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            if not db.execute(_HAS_EMPTY_MARKS).fetchall():
                for statement in EMPTY_MARKS:
                    db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO kelpie_meta (name, value) VALUES ('schema_version', ?)",
                (SCHEMA_VERSION,),
            )
            stored = db.execute(
                "SELECT value FROM kelpie_meta WHERE name = 'schema_version'"
            ).fetchall()[0][0]
            if stored != SCHEMA_VERSION:
                raise ConfigError(
                    f"the kelpie tables in {self.path} have schema version {stored}; "
                    f"this kelpie reads version {SCHEMA_VERSION}: upgrade kelpie"
                )
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    # -- reads: on the caller's thread, one statement (one snapshot) each ---

    def read_value(self, encoded: bytes, key: bytes) -> tuple[int, int, bytes | None]:
        """(the actor's version, deletes, the key's value) from one snapshot.

        ``deletes`` is the store's deletes counter if the actor is absent
        (version 0), else 0: what a transaction that read it notes.
        """
        self._check_usable()
        try:
            with self._read_lock:
                ((version, value, deletes),) = self._reader.execute(_GET, (encoded, key)).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, f"reading {self.path}") from exc
        if version is None:
            return 0, deletes or 0, None
        return version, 0, (None if value is None else bytes(value))

    def read_keys(self, encoded: bytes, prefix: bytes) -> tuple[int, int, list[bytes]]:
        """(version, deletes, sorted keys starting with ``prefix``) from one snapshot."""
        self._check_usable()
        upper = upper_bound(prefix)
        statement, params = (
            (_KEYS_FROM, (encoded, prefix))
            if upper is None
            else (_KEYS_BETWEEN, (encoded, prefix, upper))
        )
        try:
            with self._read_lock:
                rows = self._reader.execute(statement, params).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, f"reading {self.path}") from exc
        version = deletes = 0
        keys: list[bytes] = []
        for key, row_version, row_deletes in rows:
            if key is not None:
                keys.append(bytes(key))
            elif row_version is not None:
                version = row_version
            else:
                deletes = row_deletes
        keys.sort()
        return version, (0 if version else deletes), keys

    def read_version(self, encoded: bytes) -> tuple[int, int]:
        """(the actor's version, deletes) now, as ``read_value`` returns them."""
        self._check_usable()
        try:
            with self._read_lock:
                ((version, deletes),) = self._reader.execute(_STATE, (encoded,)).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, f"reading {self.path}") from exc
        return (0, deletes or 0) if version is None else (int(version), 0)

    def list_actors(
        self, namespace: str | None, after: ActorId | None, limit: int
    ) -> list[ActorId]:
        """Up to ``limit`` actors with a record, in ``ActorId`` order, after ``after``."""
        self._check_usable()
        try:
            with self._read_lock:
                index = _ActorIndex(self._reader)
                try:
                    return list_encoded(index, namespace, after, limit)
                finally:
                    index.close()
        except sqlite3.Error as exc:
            raise translate(exc, f"listing the actors of {self.path}") from exc

    # -- writes: on the writer thread ---------------------------------------

    async def write(self, job: CommitJob | DeleteJob) -> None:
        """Commit one job in its own SQLite transaction."""
        self._check_usable()
        (outcome,) = await self._writer.submit(functools.partial(self._batch_sync, (job,)))
        if outcome is not None:
            raise outcome

    async def write_batch(self, jobs: Sequence[CommitJob | DeleteJob]) -> list[Outcome]:
        """Commit every job in one SQLite transaction (one fsync); one outcome per job.

        A job whose version check fails wrote nothing: its conflict is its
        outcome and the others still commit. An SQLite error while applying
        the batch rolls it back and reruns it job by job, each in its own
        transaction, so only the job at fault fails.
        """
        self._check_usable()
        return await self._writer.submit(functools.partial(self._batch_sync, jobs))

    def _batch_sync(self, jobs: Sequence[CommitJob | DeleteJob]) -> list[Outcome]:
        db = self._writer_db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [translate(exc, f"beginning a commit to {self.path}")] * len(jobs)
        try:
            outcomes = [self._apply(job) for job in jobs]
        except sqlite3.Error as exc:
            self._rollback()
            if len(jobs) > 1:
                return [self._batch_sync((job,))[0] for job in jobs]
            return [translate(exc, f"writing {self.path}")]
        except BaseException:
            self._rollback()
            raise
        try:
            db.execute("COMMIT")  # the one fsync of the batch
        except sqlite3.Error as exc:
            failure = self._commit_failure(exc)
            return [failure if outcome is None else outcome for outcome in outcomes]
        return outcomes

    def _apply(self, job: CommitJob | DeleteJob) -> Outcome:
        db = self._writer_db
        rows = db.execute(_VERSION, (job.encoded,)).fetchall()
        if isinstance(job, DeleteJob):
            if rows:
                db.execute(_DELETE_RECORDS, (job.encoded,))
                db.execute(_DELETE_VERSION, (job.encoded,))
                db.execute(_MOVE_DELETES, (int(rows[0][0]),))
            return None
        version = int(rows[0][0]) if rows else 0
        if job.read_version is not None and version != job.read_version:
            return TransactionConflictError(
                f"another commit on {job.actor} landed after this transaction read it"
            )
        if not rows:  # a new actor: its versions start above every deleted one's
            floor = self._writer_deletes()
            if job.read_version == 0 and floor != job.read_deletes:
                return deleted_since_read(job.actor)
            version = floor
        encoded = job.encoded
        deletes = [(encoded, key) for key, value in job.writes.items() if value is None]
        upserts = [(encoded, key, value) for key, value in job.writes.items() if value is not None]
        if deletes:
            db.executemany(_DELETE, deletes)
        if upserts:
            db.executemany(_UPSERT, upserts)
        db.execute(_BUMP, (encoded, version + 1))
        return None

    def _writer_deletes(self) -> int:
        rows = self._writer_db.execute(_WRITER_DELETES).fetchall()
        return int(rows[0][0]) if rows else 0

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self._writer_db.in_transaction:
                self._writer_db.execute("ROLLBACK")

    def _commit_failure(self, exc: sqlite3.Error) -> StorageError:
        """What a failed ``COMMIT`` means for the jobs that wrote something."""
        if self._writer_db.in_transaction or is_busy(exc):
            # SQLite kept the transaction open (a lock it could not get): nothing landed.
            self._rollback()
            return translate(exc, f"committing to {self.path}; nothing was written")
        if is_full(exc):
            return StorageFullError(
                f"the disk under {self.path} is full; nothing of this commit was written: {exc}"
            )
        if isinstance(translate(exc, ""), CorruptStateError):
            return translate(exc, f"committing to {self.path}")
        return CommitOutcomeUnknownError(
            f"the SQLite commit to {self.path} failed while writing: {exc}"
        )

    # -- lifecycle ----------------------------------------------------------

    async def close(self) -> None:
        """Finish the commits already submitted, then close both connections."""
        _open_databases.discard(self)
        if self.inherited:
            return  # the parent's writer thread does not exist here; leave its connections
        try:
            await self._writer.submit(self._writer_db.close)
        finally:
            self._writer.stop()
            with self._read_lock:
                self._reader.close()


def deleted_since_read(actor: ActorId) -> TransactionConflictError:
    return TransactionConflictError(
        f"an actor was deleted after this transaction read {actor} as absent "
        "(the store counts deletes, not which actor they removed: ADR 0013)"
    )


class _ActorIndex:
    """``kelpie_versions`` on the reader connection, as ``list_encoded`` reads it.

    Each ``scan`` is a statement stepped lazily; ``close`` ends every one, so
    no read transaction stays open on the connection after the listing.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._cursors: list[sqlite3.Cursor] = []

    def first_from(self, key: bytes) -> bytes | None:
        rows = self._connection.execute(_FIRST_FROM, (key,)).fetchall()
        return bytes(rows[0][0]) if rows else None

    def scan(self, start: bytes, stop: bytes, first: int) -> Iterator[bytes]:
        cursor = self._connection.execute(_SCAN, (start, stop))
        self._cursors.append(cursor)
        return chain.from_iterable(_chunks(cursor, first))

    def close(self) -> None:
        for cursor in self._cursors:
            cursor.close()


def _chunks(cursor: sqlite3.Cursor, first: int) -> Iterator[list[bytes]]:
    """The encoded ids (BLOBs: ``bytes``) the cursor steps to, ``first`` rows, then more
    at a time: the consumer steps through each list in C."""
    size = first
    while rows := cursor.fetchmany(size):
        yield list(map(itemgetter(0), rows))
        size = min(size * 2, 4096)


_open_databases: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # SQLite connections must not be carried across fork(), and the writer
    # thread did not survive it: every storage the parent opened is unusable.
    for database in list(_open_databases):
        database.inherited = True
    _open_databases.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
