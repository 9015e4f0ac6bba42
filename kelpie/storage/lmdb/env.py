"""One shared LMDB environment per directory per process: open, grow, translate errors.

LMDB forbids opening one environment twice in a process, and binds a write
transaction to the thread that began it. So every ``LMDBStorage`` on a
directory shares one ``SharedEnv`` (refcounted, keyed by the directory's
identity), which owns the ``lmdb.Environment``, a single writer thread, and
the lock that keeps a map resize away from in-process readers. Every
``lmdb.Error`` is translated here, at the boundary (``translate``).
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, TypeVar

import lmdb

from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    CorruptStateError,
    StorageClosedError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
)
from kelpie.storage.group_commit import DEFAULT_MAX_BATCH
from kelpie.storage.writer_thread import WriterThread

__all__ = [
    "EMPTY_MARKS",
    "FORMAT_VERSION",
    "LMDBOptions",
    "Outcome",
    "SharedEnv",
    "WriteJob",
    "WriteTxn",
    "acquire",
    "translate",
]

T = TypeVar("T")
A = TypeVar("A")
Txn: TypeAlias = "lmdb.Transaction[bytes]"

FORMAT_VERSION = 1
"""The on-disk layout version this module writes and reads (ADR 0001)."""

_DB_NAMES = (b"meta", b"actors", b"records")
_FORMAT_KEY = b"format"
EMPTY_MARKS = b"empty_marks"
"""In ``meta`` once every actor without a record is marked (``kelpie.storage.lmdb.listing``):
a new store starts with it."""
_MAX_ATTEMPTS = 64
_PAGE = mmap.PAGESIZE


def round_to_page(size: int) -> int:
    return -(-size // _PAGE) * _PAGE


@dataclass(frozen=True)
class LMDBOptions:
    """The options of an ``lmdb://`` storage (see docs/backends/lmdb.md)."""

    map_size: int = 64 * 1024**2
    max_map_size: int = 1024**4
    sync: bool = True
    metasync: bool = True
    max_readers: int = 126
    readahead: bool = True
    group_commit: bool = True
    max_batch: int = DEFAULT_MAX_BATCH

    def environment_settings(self) -> tuple[object, ...]:
        """The options that shape the shared environment (the rest are per storage)."""
        return (
            self.map_size,
            self.max_map_size,
            self.sync,
            self.metasync,
            self.max_readers,
            self.readahead,
        )


# -- error translation: one mapping, most specific first -------------------

_MAPPING: tuple[tuple[type[lmdb.Error], type[StorageError], str], ...] = (
    (lmdb.MapFullError, StorageFullError, "the LMDB map is full"),
    (lmdb.TxnFullError, StorageFullError, "the commit is too large for one LMDB transaction"),
    (lmdb.DiskError, StorageFullError, "the disk is full"),
    (lmdb.ReadersFullError, StorageUnavailableError, "too many open readers; raise max_readers"),
    (lmdb.ReadonlyError, StorageUnavailableError, "LMDB may not write its files"),
    (lmdb.CorruptedError, CorruptStateError, "the LMDB data file is corrupted"),
    (lmdb.PageNotFoundError, CorruptStateError, "the LMDB data file is corrupted"),
    (lmdb.VersionMismatchError, CorruptStateError, "the LMDB data file has another version"),
    (lmdb.InvalidError, CorruptStateError, "the LMDB data file is not valid"),
    (lmdb.IncompatibleError, CorruptStateError, "the LMDB layout is not kelpie's"),
    (lmdb.PanicError, StorageUnavailableError, "LMDB hit a fatal error; reopen the storage"),
    (lmdb.LockError, StorageUnavailableError, "LMDB could not take its lock"),
    (lmdb.MemoryError, StorageUnavailableError, "LMDB ran out of memory"),
    (lmdb.TlsFullError, StorageUnavailableError, "too many threads use LMDB"),
)
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_UNAVAILABLE_ERRNOS = {errno.EIO, errno.EACCES, errno.EPERM, errno.EROFS, errno.EAGAIN}


def translate(exc: lmdb.Error, where: str = "") -> StorageError:
    """The kelpie error for an ``lmdb.Error``; raise it ``from exc``."""
    suffix = f" ({where})" if where else ""
    for lmdb_type, kelpie_type, message in _MAPPING:
        if isinstance(exc, lmdb_type):
            return kelpie_type(f"{message}{suffix}: {exc}")
    code = getattr(exc, "code", 0)
    if code in _FULL_ERRNOS:
        return StorageFullError(f"the disk is full{suffix}: {exc}")
    if code in _UNAVAILABLE_ERRNOS:
        return StorageUnavailableError(f"LMDB I/O failed{suffix}: {exc}")
    return StorageError(f"LMDB failed{suffix}: {exc}")


# -- write jobs: what the writer thread applies --------------------------------


class WriteTxn:
    """A write transaction, with a cursor on the ``actors`` and one on the ``records`` database.

    The jobs written in the transaction share the cursors: a cursor's
    ``get``/``put`` cost about a fifth less than ``txn.get``/``txn.put``,
    which open an internal cursor at every call.
    """

    __slots__ = ("actors", "records", "txn")

    def __init__(self, txn: Txn, env: SharedEnv) -> None:
        self.txn = txn
        self.actors = txn.cursor(db=env.actors)
        self.records = txn.cursor(db=env.records)


class WriteJob(Protocol):
    """One commit, applied in two steps inside a write transaction.

    ``check`` only reads: it raises the commit's own failure (a version
    conflict, a corrupt entry) before anything of it is written. ``write``
    then applies the commit, using what ``check`` found; only ``lmdb.Error``
    is expected from it. Several jobs share one transaction, in order, so a
    job sees the writes of the jobs before it.
    """

    @property
    def size_hint(self) -> int:
        """About how many bytes the commit writes (how much to grow a full map)."""
        ...

    def check(self, w: WriteTxn) -> None: ...

    def write(self, w: WriteTxn) -> None: ...


Outcome: TypeAlias = "BaseException | None"
"""A job's outcome: ``None`` once committed, or the exception its caller gets."""


def _check_and_write(w: WriteTxn, jobs: Sequence[WriteJob]) -> list[Outcome]:
    """Every job in ``w``, in order; a failed ``check`` is that job's outcome.

    An ``lmdb.Error`` (LMDB may have spoiled the transaction) and anything a
    ``write`` raises (the transaction may hold part of that job) propagate:
    the caller aborts the transaction.
    """
    outcomes: list[Outcome] = []
    append = outcomes.append
    for job in jobs:
        try:
            job.check(w)
        except lmdb.Error:
            raise
        except Exception as exc:
            append(exc)
            continue
        job.write(w)
        append(None)
    return outcomes


# -- the shared environment -------------------------------------------------


class SharedEnv:
    """An open environment, its three named databases and its writer thread."""

    def __init__(self, path: str, key: tuple[int, int], options: LMDBOptions) -> None:
        self.path = path
        self.key = key
        self.options = options
        self.refs = 0
        self.inherited = False  # set in a child after fork(): never use it there
        # Held by every in-process read and by map resizes: set_mapsize
        # needs no transaction open in this process. Writers do not take it.
        self._lock = threading.Lock()
        try:
            self._env = lmdb.open(
                path,
                map_size=options.map_size,
                subdir=True,
                create=True,
                sync=options.sync,
                metasync=options.metasync,
                readahead=options.readahead,
                max_readers=options.max_readers,
                max_dbs=len(_DB_NAMES),
                max_spare_txns=1,
            )
        except lmdb.Error as exc:
            if "already open" in str(exc):
                raise ConfigError(
                    f"the LMDB environment {path} is already open in this process by "
                    "another library or a parent process before fork(); open kelpie "
                    "storage after fork, or use the 'spawn' start method"
                ) from exc
            raise ConfigError(f"cannot open the LMDB environment {path}: {exc}") from exc
        try:
            self.meta, self.actors, self.records = self._open_databases()
            # Free reader slots left by processes that died (e.g. SIGKILL);
            # they would pin old pages and make the file grow.
            self._env.reader_check()
        except lmdb.Error as exc:
            self._env.close()
            raise translate(exc, f"opening {path}") from exc
        except BaseException:
            self._env.close()
            raise
        self._writer = WriterThread(f"kelpie-lmdb-writer {path}")

    def _open_databases(self) -> tuple[lmdb._Database, lmdb._Database, lmdb._Database]:
        try:
            with self._env.begin(write=True) as txn:
                names = list(txn.cursor().iternext(values=False))
                foreign = [name for name in names if name not in _DB_NAMES]
                if foreign:
                    raise ConfigError(
                        f"{self.path} holds an LMDB environment not written by kelpie "
                        f"(it has a record named {foreign[0]!r})"
                    )
                meta, actors, records = (self._env.open_db(n, txn=txn) for n in _DB_NAMES)
                stored = txn.get(_FORMAT_KEY, db=meta)
                if stored is None:
                    txn.put(_FORMAT_KEY, str(FORMAT_VERSION).encode(), db=meta)
                    txn.put(EMPTY_MARKS, b"1", db=meta)
                elif stored != str(FORMAT_VERSION).encode():
                    raise ConfigError(
                        f"the kelpie store at {self.path} has format {stored!r}; this "
                        f"kelpie reads format {FORMAT_VERSION}: upgrade kelpie"
                    )
        except lmdb.Error as exc:
            raise ConfigError(f"cannot open the kelpie store at {self.path}: {exc}") from exc
        return meta, actors, records

    def _check_usable(self) -> None:
        if self.inherited:
            raise StorageClosedError(
                f"the LMDB storage at {self.path} was opened before fork(); "
                "open a new one in this process"
            )

    # -- reads: on the caller's thread, never waiting for the writer --------

    async def read(self, fn: Callable[[Txn, A], T], arg: A) -> T:
        """``fn(txn, arg)`` in a fresh read snapshot, on this thread (it takes microseconds).

        A function (or bound method) and its argument rather than a closure:
        reads are on the event loop's hot path, and this builds no closure per
        read.
        """
        self._check_usable()
        resized = 0
        while True:
            try:
                with self._lock:
                    txn = self._env.begin()
                    try:
                        return fn(txn, arg)
                    finally:
                        txn.abort()
            except lmdb.MapResizedError:
                # Another process grew the map past ours: adopt its size.
                resized += 1
                if resized == _MAX_ATTEMPTS:
                    raise StorageUnavailableError(
                        f"{self.path}: the LMDB map kept being resized"
                    ) from None
                await self._writer.submit(self._adopt_map_size)
            except lmdb.Error as exc:
                raise translate(exc, f"reading {self.path}") from exc

    # -- writes: one write transaction per call, on the writer thread -------

    async def write(self, job: WriteJob) -> None:
        """Check and write ``job`` in one write transaction on the writer thread, and commit.

        ``check`` may raise to abort. On a full map the transaction is aborted,
        the map grows (by at least ``2 * job.size_hint``) and the job runs again.
        """
        self._check_usable()
        await self._writer.submit(functools.partial(self._write_sync, job))

    def _write_sync(self, job: WriteJob) -> None:
        for _ in range(_MAX_ATTEMPTS):
            try:
                txn = self._env.begin(write=True)
            except lmdb.MapResizedError:
                self._adopt_map_size()
                continue
            except lmdb.Error as exc:
                raise translate(exc, f"writing {self.path}") from exc
            try:
                w = WriteTxn(txn, self)
                job.check(w)
                job.write(w)
            except lmdb.MapFullError as exc:
                txn.abort()
                self._grow(job.size_hint, exc)
                continue
            except lmdb.MapResizedError:
                txn.abort()
                self._adopt_map_size()
                continue
            except lmdb.Error as exc:
                txn.abort()
                raise translate(exc, f"writing {self.path}") from exc
            except BaseException:
                txn.abort()
                raise
            try:
                txn.commit()  # on failure LMDB has aborted the transaction
            except lmdb.MapFullError as exc:
                self._grow(job.size_hint, exc)
                continue
            except lmdb.Error as exc:
                raise self._commit_failure(exc) from exc
            return
        raise StorageUnavailableError(f"{self.path}: the LMDB map kept being resized")

    async def write_batch(self, jobs: Sequence[WriteJob]) -> list[Outcome]:
        """Write every job in one write transaction (one fsync); one outcome per job.

        Each job's ``check`` runs just before its ``write``, in the shared
        transaction, so it sees the jobs before it (two commits of one actor
        in a batch are serialised). A job whose ``check`` raises wrote
        nothing: that exception is its outcome and the others still commit.
        Any other failure while writing (a full map or transaction, an LMDB
        error) aborts the whole transaction: a full map grows and the batch
        reruns, anything else reruns the batch job by job, each in its own
        transaction, so only the job at fault fails. A failure of the final
        commit reaches every job that wrote something.
        """
        self._check_usable()
        return await self._writer.submit(functools.partial(self._write_batch_sync, jobs))

    def _write_batch_sync(self, jobs: Sequence[WriteJob]) -> list[Outcome]:
        if len(jobs) == 1:
            return [self._outcome_of(jobs[0])]
        for _ in range(_MAX_ATTEMPTS):
            try:
                txn = self._env.begin(write=True)
            except lmdb.MapResizedError:
                self._adopt_map_size()
                continue
            except lmdb.Error as exc:
                return [translate(exc, f"writing {self.path}")] * len(jobs)
            try:
                outcomes = _check_and_write(WriteTxn(txn, self), jobs)
            except lmdb.MapFullError as exc:
                txn.abort()
                if not self._try_grow(sum(job.size_hint for job in jobs), exc):
                    return self._one_by_one(jobs)
                continue
            except lmdb.MapResizedError:
                txn.abort()
                self._adopt_map_size()
                continue
            except Exception:
                # An LMDB error (a full transaction, a bad page...) or a write
                # that failed halfway: alone, each job fails or commits on its own.
                txn.abort()
                return self._one_by_one(jobs)
            except BaseException:
                txn.abort()
                raise
            try:
                txn.commit()  # the one fsync of the batch
            except lmdb.MapFullError as exc:
                if not self._try_grow(sum(job.size_hint for job in jobs), exc):
                    return self._one_by_one(jobs)
                continue
            except lmdb.Error as exc:
                failure = self._commit_failure(exc)
                return [failure if outcome is None else outcome for outcome in outcomes]
            return outcomes
        error = StorageUnavailableError(f"{self.path}: the LMDB map kept being resized")
        return [error] * len(jobs)

    def _one_by_one(self, jobs: Sequence[WriteJob]) -> list[Outcome]:
        """The batch failed as a whole: each job alone, so only a job at fault fails."""
        return [self._outcome_of(job) for job in jobs]

    def _outcome_of(self, job: WriteJob) -> Outcome:
        try:
            self._write_sync(job)
        except Exception as exc:
            return exc
        return None

    def _commit_failure(self, exc: lmdb.Error) -> StorageError:
        if isinstance(exc, lmdb.DiskError) or getattr(exc, "code", 0) in _FULL_ERRNOS:
            return StorageFullError(f"the disk under {self.path} is full: {exc}")
        return CommitOutcomeUnknownError(
            f"the LMDB commit to {self.path} failed while writing: {exc}"
        )

    def _try_grow(self, size_hint: int, cause: lmdb.Error) -> bool:
        """Grow the map for a batch; False if it is at ``max_map_size`` already."""
        try:
            self._grow(size_hint, cause)
        except StorageFullError:
            return False
        return True

    def _grow(self, size_hint: int, cause: lmdb.Error) -> None:
        with self._lock:
            current = self._env.info()["map_size"]
            wanted = round_to_page(max(current * 2, current + 2 * size_hint))
            target = min(wanted, self.options.max_map_size)
            if target <= current:
                raise StorageFullError(
                    f"the LMDB map of {self.path} is full at {current} bytes, its "
                    f"max_map_size; nothing of this commit was written"
                ) from cause
            try:
                self._env.set_mapsize(target)
            except lmdb.Error as exc:
                raise translate(exc, f"growing the map of {self.path}") from exc

    def _adopt_map_size(self) -> None:
        with self._lock:
            try:
                self._env.set_mapsize(0)
            except lmdb.Error as exc:
                raise translate(exc, f"adopting the map size of {self.path}") from exc

    def map_size(self) -> int:
        """The current map size of this process's mapping, in bytes."""
        with self._lock:
            return int(self._env.info()["map_size"])

    # -- lifecycle ----------------------------------------------------------

    async def release(self) -> None:
        """Drop one reference; the last one drains the writer and closes the env."""
        with _registry_lock:
            self.refs -= 1
            if self.refs > 0:
                return
        if not self.inherited:
            await self._writer.submit(_drained)
        with _registry_lock:
            if self.refs > 0:  # reopened while we drained
                return
            if _registry.get(self.key) is self:
                del _registry[self.key]
            if not self.inherited:
                with self._lock:
                    self._env.close()
            self._writer.stop()


def _drained() -> None:
    """Queued behind every commit already submitted to the writer thread."""


_registry: dict[tuple[int, int], SharedEnv] = {}
_registry_lock = threading.Lock()


def _after_fork_in_child() -> None:
    for env in _registry.values():
        env.inherited = True
    _registry.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def acquire(directory: str, options: LMDBOptions) -> SharedEnv:
    """The shared environment of ``directory`` (created if missing), one more reference."""
    try:
        os.makedirs(directory, exist_ok=True)
        stat = os.stat(directory)
    except FileExistsError as exc:
        raise ConfigError(f"the LMDB path {directory} exists and is not a directory") from exc
    except OSError as exc:
        raise ConfigError(f"cannot use {directory} as an LMDB directory: {exc}") from exc
    path = os.path.realpath(directory)
    key = (stat.st_dev, stat.st_ino)
    with _registry_lock:
        env = _registry.get(key)
        if env is None:
            env = SharedEnv(path, key, options)
            _registry[key] = env
        elif env.options.environment_settings() != options.environment_settings():
            raise ConfigError(
                f"{path} is already open in this process with other options "
                f"({env.options}); open it with the same map_size, max_map_size, sync, "
                "metasync, max_readers and readahead to share it"
            )
        env.refs += 1
        return env
