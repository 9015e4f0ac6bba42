"""``lmdb://``: actor records in an embedded LMDB environment (the default backend).

Layout (ADR 0001): three named databases in one environment. ``actors`` maps
an encoded ``ActorId`` to its number and version; ``records`` maps the actor's
8-byte number followed by the key to the value, so an actor's keys are one
contiguous, bytewise-ordered range and ``list_keys(prefix)`` is one cursor
range; ``meta`` holds the format and the next actor number. Keys stay under
LMDB's 511-byte limit whatever the ids are.

Reads run on the event loop's thread in short read transactions: LMDB readers
never wait for the writer. Each commit is one write transaction, begun and
committed inside one call on the environment's single writer thread (write
transactions belong to their thread); it checks the actor's version, applies
the writes and bumps the version, so conflicts are detected across threads
and processes alike (LMDB's writer lock serialises every writer of the
directory). A full map grows up to ``max_map_size``; past it the commit fails
with ``StorageFullError`` and nothing written. Operator guide:
``docs/backends/lmdb.md``.
"""

from __future__ import annotations

import asyncio
import os
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from kelpie.actor.id import ActorId
from kelpie.errors import (
    ConfigError,
    CorruptStateError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.storage.base import BufferedTransaction, StorageBase, Writes
from kelpie.storage.options import as_bool, as_int, as_size, merge_options
from kelpie.storage.url import StorageURL

__all__ = ["LMDBStorage", "open_lmdb"]

T = TypeVar("T")

FORMAT = b"1"
_ACTOR = struct.Struct(">QQ")  # actor number, version
_NUMBER = struct.Struct(">Q")

DEFAULT_MAP_SIZE = 64 * 1024**2
DEFAULT_MAX_MAP_SIZE = 64 * 1024**3

_OPTIONS = {
    "map_size": as_size,
    "max_map_size": as_size,
    "sync": as_bool,
    "metasync": as_bool,
    "max_readers": as_int,
}


def _translate(exc: lmdb.Error, what: str) -> StorageError:
    """One mapping from py-lmdb's errors to kelpie's, most specific first."""
    if isinstance(exc, lmdb.MapFullError):
        return StorageFullError(f"LMDB map is full while {what}")
    if isinstance(exc, lmdb.DiskError):
        return StorageFullError(f"LMDB could not write to disk while {what}: {exc}")
    if isinstance(exc, lmdb.ReadersFullError | lmdb.LockError | lmdb.TlsFullError):
        return StorageUnavailableError(f"LMDB is out of reader or lock slots while {what}")
    if isinstance(
        exc,
        lmdb.CorruptedError
        | lmdb.PageNotFoundError
        | lmdb.InvalidError
        | lmdb.VersionMismatchError
        | lmdb.PanicError,
    ):
        return CorruptStateError(f"the LMDB environment is damaged ({what}): {exc}")
    return StorageError(f"LMDB failed while {what}: {type(exc).__name__}: {exc}")


@dataclass
class _Environment:
    """One open LMDB environment, shared by every storage on the same directory."""

    path: str
    env: Any
    actors: Any
    records: Any
    meta: Any
    max_map_size: int
    writer: ThreadPoolExecutor
    # Held by readers and by a resize: set_mapsize needs no transaction active.
    resize_lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0

    @contextmanager
    def reading(self) -> Iterator[Any]:
        for attempt in (0, 1):
            with self.resize_lock:
                try:
                    txn = self.env.begin(buffers=False)
                except lmdb.MapResizedError:
                    if attempt:
                        raise
                    self.env.set_mapsize(0)  # adopt another process's larger map
                    continue
                try:
                    yield txn
                finally:
                    txn.abort()
                return

    def grow(self) -> bool:
        """Double the map (up to the maximum); False if it is at the maximum already."""
        current = int(self.env.info()["map_size"])
        if current >= self.max_map_size:
            return False
        with self.resize_lock:
            self.env.set_mapsize(min(current * 2, self.max_map_size))
        return True


_environments: dict[str, _Environment] = {}
_environments_lock = threading.Lock()


def _open_environment(path: Path, options: dict[str, Any]) -> _Environment:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise ConfigError(f"lmdb:// path {str(path)!r} exists and is not a directory") from exc
    except OSError as exc:
        raise StorageUnavailableError(
            f"cannot create the lmdb:// directory {str(path)!r}: {exc.strerror}"
        ) from exc
    if not path.is_dir():
        raise ConfigError(f"lmdb:// path {str(path)!r} is not a directory")
    real = os.path.realpath(path)
    with _environments_lock:
        shared = _environments.get(real)
        if shared is None:
            map_size = options.get("map_size", DEFAULT_MAP_SIZE)
            max_map_size = options.get("max_map_size", max(DEFAULT_MAX_MAP_SIZE, map_size))
            if map_size <= 0 or max_map_size < map_size:
                raise ConfigError("lmdb:// needs 0 < map_size <= max_map_size")
            try:
                env = lmdb.open(
                    real,
                    map_size=map_size,
                    max_dbs=4,
                    sync=options.get("sync", True),
                    metasync=options.get("metasync", True),
                    max_readers=options.get("max_readers", 126),
                    subdir=True,
                    readahead=False,
                )
                actors = env.open_db(b"actors")
                records = env.open_db(b"records")
                meta = env.open_db(b"meta")
                with env.begin(write=True) as txn:
                    found = txn.get(b"format", db=meta)
                    if found is None:
                        txn.put(b"format", FORMAT, db=meta)
                    elif found != FORMAT:
                        raise ConfigError(
                            f"{real} holds kelpie LMDB format {found!r}; this kelpie reads "
                            f"format {FORMAT!r}"
                        )
            except lmdb.Error as exc:
                raise _translate(exc, f"opening {real}") from exc
            shared = _Environment(
                real,
                env,
                actors,
                records,
                meta,
                max_map_size,
                ThreadPoolExecutor(1, thread_name_prefix="kelpie-lmdb-writer"),
            )
            _environments[real] = shared
        shared.users += 1
        return shared


def _release_environment(shared: _Environment) -> None:
    with _environments_lock:
        shared.users -= 1
        if shared.users > 0:
            return
        del _environments[shared.path]
    shared.writer.shutdown(wait=True)
    shared.env.close()


class _LMDBTransaction(BufferedTransaction):
    _storage: LMDBStorage

    def __init__(self, storage: LMDBStorage, actor: ActorId) -> None:
        super().__init__(storage, actor)
        self._encoded = actor.encode()
        self._read_version: int | None = None

    def _note(self, version: int) -> None:
        if self._read_version is None:
            self._read_version = version

    async def _read(self, key: bytes) -> bytes | None:
        version, value = self._storage._read_value(self._encoded, key)
        self._note(version)
        return value

    async def _read_keys(self, prefix: bytes) -> list[bytes]:
        version, keys = self._storage._read_keys(self._encoded, prefix)
        self._note(version)
        return keys

    async def _commit(self, writes: Writes) -> None:
        await self._storage._write(self.actor, self._encoded, self._read_version, writes)


class LMDBStorage(StorageBase):
    """Actor records in one LMDB environment; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        options = merge_options("lmdb", {}, options, _OPTIONS)
        self.path = Path(path)
        self._shared = _open_environment(self.path, options)

    def __repr__(self) -> str:
        return f"LMDBStorage({self._shared.path!r})"

    # -- reads, on the loop's thread -----------------------------------------

    def _reading(self, what: str, read: Callable[[Any], T]) -> T:
        try:
            with self._shared.reading() as txn:
                return read(txn)
        except lmdb.Error as exc:
            raise _translate(exc, what) from exc

    def _read_value(self, encoded: bytes, key: bytes) -> tuple[int, bytes | None]:
        shared = self._shared

        def read(txn: Any) -> tuple[int, bytes | None]:
            entry = txn.get(encoded, db=shared.actors)
            if entry is None:
                return 0, None
            number, version = _ACTOR.unpack(entry)
            value: bytes | None = txn.get(_NUMBER.pack(number) + key, db=shared.records)
            return version, value

        return self._reading("reading a key", read)

    def _read_keys(self, encoded: bytes, prefix: bytes) -> tuple[int, list[bytes]]:
        shared = self._shared

        def read(txn: Any) -> tuple[int, list[bytes]]:
            entry = txn.get(encoded, db=shared.actors)
            if entry is None:
                return 0, []
            number, version = _ACTOR.unpack(entry)
            start = _NUMBER.pack(number) + prefix
            keys: list[bytes] = []
            cursor = txn.cursor(db=shared.records)
            if cursor.set_range(start):
                for key in cursor.iternext(keys=True, values=False):
                    if not key.startswith(start):
                        break
                    keys.append(key[_NUMBER.size :])
            return version, keys

        return self._reading("listing keys", read)

    async def _get(self, actor: ActorId, key: bytes) -> bytes | None:
        return self._read_value(actor.encode(), key)[1]

    async def _list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        return self._read_keys(actor.encode(), prefix)[1]

    # -- commits, on the writer thread ---------------------------------------

    async def _write(
        self, actor: ActorId, encoded: bytes, read_version: int | None, writes: Writes
    ) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            self._shared.writer, self._commit_in_thread, actor, encoded, read_version, writes
        )

    def _commit_in_thread(
        self, actor: ActorId, encoded: bytes, read_version: int | None, writes: Writes
    ) -> None:
        shared = self._shared
        while True:
            try:
                with shared.env.begin(write=True) as txn:
                    self._apply(txn, actor, encoded, read_version, writes)
                return
            except lmdb.MapFullError as exc:
                try:
                    grown = shared.grow()
                except lmdb.Error as grow_exc:
                    raise _translate(grow_exc, "growing the map") from grow_exc
                if not grown:
                    raise StorageFullError(
                        f"LMDB map is at max_map_size ({shared.max_map_size} bytes); the commit "
                        f"on {actor} was not written"
                    ) from exc
            except lmdb.MapResizedError:
                with shared.resize_lock:
                    shared.env.set_mapsize(0)  # another process grew the map: adopt it
            except lmdb.Error as exc:
                raise _translate(exc, f"committing on {actor}") from exc

    def _apply(
        self, txn: Any, actor: ActorId, encoded: bytes, read_version: int | None, writes: Writes
    ) -> None:
        shared = self._shared
        entry = txn.get(encoded, db=shared.actors)
        if entry is None:
            number = self._next_number(txn)
            version = 0
        else:
            number, version = _ACTOR.unpack(entry)
        if read_version is not None and version != read_version:
            raise TransactionConflictError(
                f"another commit on {actor} landed after this transaction read it"
            )
        base = _NUMBER.pack(number)
        records = shared.records
        for key, value in writes.items():
            if value is None:
                txn.delete(base + key, db=records)
            else:
                txn.put(base + key, value, db=records)
        txn.put(encoded, _ACTOR.pack(number, version + 1), db=shared.actors)

    def _next_number(self, txn: Any) -> int:
        raw = txn.get(b"next_actor", db=self._shared.meta)
        number = 1 if raw is None else _NUMBER.unpack(raw)[0]
        txn.put(b"next_actor", _NUMBER.pack(number + 1), db=self._shared.meta)
        return int(number)

    def _transaction(self, actor: ActorId) -> _LMDBTransaction:
        return _LMDBTransaction(self, actor)

    async def _close(self) -> None:
        _release_environment(self._shared)


def open_lmdb(url: str, **options: Any) -> LMDBStorage:
    """Factory for ``lmdb:///abs/dir`` and ``lmdb://./rel/dir``."""
    parsed = StorageURL.parse(url)
    merged = merge_options("lmdb", parsed.options, options, _OPTIONS)
    path = (parsed.host or "") + parsed.path if parsed.host in (None, "", ".", "..") else None
    if path is None:
        raise ConfigError(
            "an lmdb:// URL names a directory: lmdb:///absolute/dir or lmdb://./relative/dir"
        )
    if not path:
        raise ConfigError("the lmdb:// URL names no directory")
    return LMDBStorage(path, **merged)
