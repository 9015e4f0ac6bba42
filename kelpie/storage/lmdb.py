"""``lmdb://``: embedded, durable storage in an LMDB environment.

``lmdb:///abs/dir`` or ``lmdb://./rel/dir`` (relative to the working directory
at open time). Layout (ADR 0001), in three named databases:

```
meta     b"format" -> b"1";  b"next_actor" -> 8-byte counter
actors   ActorId.encode() -> actor number (8 bytes) + version (8 bytes)
records  actor number (8 bytes, big-endian) + key -> value
```

The actor table keeps record keys short (LMDB keys are at most 511 bytes; an
encoded id plus a key can reach 514) and makes ``list_keys`` one cursor range.
Reads run in a fresh read snapshot on the caller's thread and never wait for
the writer; each commit is one write transaction on the environment's writer
thread, which checks the actor's version (ADR 0002), applies the writes and
bumps the version. See docs/backends/lmdb.md.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from kelpie.actor.id import ActorId
from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    CorruptStateError,
    TransactionConflictError,
)
from kelpie.storage.base import BufferedTransaction, StorageBase, Writes
from kelpie.storage.group_commit import Batcher
from kelpie.storage.lmdb_env import LMDBOptions, SharedEnv, Txn, WriteJob, acquire, round_to_page
from kelpie.storage.options import as_bool, as_int, as_size, merge_options
from kelpie.storage.url import StorageURL

__all__ = ["LMDBOptions", "LMDBStorage", "open_lmdb"]

_NUMBER = struct.Struct(">Q")
_ENTRY = struct.Struct(">QQ")
_NEXT_ACTOR = b"next_actor"
_MIN_MAP_SIZE = 32 * 1024


def _actor_entry(env: SharedEnv, txn: Txn, encoded: bytes) -> tuple[int, int] | None:
    """The actor's (number, version), or ``None`` if it never committed."""
    raw = txn.get(encoded, db=env.actors)
    if raw is None:
        return None
    if len(raw) != _ENTRY.size:
        raise CorruptStateError(f"the LMDB actor entry of {encoded!r} is {len(raw)} bytes")
    number, version = _ENTRY.unpack(raw)
    return number, version


def _keys_with_prefix(env: SharedEnv, txn: Txn, number: int, prefix: bytes) -> list[bytes]:
    start = _NUMBER.pack(number) + prefix
    cursor = txn.cursor(db=env.records)
    keys: list[bytes] = []
    if cursor.set_range(start):
        for key in cursor.iternext(values=False):
            if not key.startswith(start):
                break
            keys.append(key[_NUMBER.size :])
    return keys


def _allocate_number(env: SharedEnv, txn: Txn) -> int:
    raw = txn.get(_NEXT_ACTOR, db=env.meta)
    number = 1 if raw is None else _NUMBER.unpack(raw)[0]
    txn.put(_NEXT_ACTOR, _NUMBER.pack(number + 1), db=env.meta)
    return number


def _apply(
    env: SharedEnv,
    txn: Txn,
    actor: ActorId,
    encoded: bytes,
    read_version: int | None,
    writes: Writes,
) -> None:
    """Inside one write transaction: check the version, write, bump the version."""
    entry = _actor_entry(env, txn, encoded)
    number, version = (None, 0) if entry is None else entry
    if read_version is not None and version != read_version:
        raise TransactionConflictError(
            f"another commit on {actor} landed after this transaction read it"
        )
    if number is None:
        number = _allocate_number(env, txn)
    prefix = _NUMBER.pack(number)
    records = env.records
    for key, value in writes.items():
        if value is None:
            txn.delete(prefix + key, db=records)
        else:
            txn.put(prefix + key, value, db=records)
    txn.put(encoded, _ENTRY.pack(number, version + 1), db=env.actors)


class _LMDBTransaction(BufferedTransaction):
    _storage: LMDBStorage

    def __init__(self, storage: LMDBStorage, actor: ActorId) -> None:
        super().__init__(storage, actor)
        self._env = storage._env
        self._encoded = actor.encode()
        self._read_version: int | None = None
        self._number: int | None = None

    def _note_read(self, txn: Txn) -> int | None:
        """The actor's number; the first call records its version in this snapshot."""
        if self._number is not None and self._read_version is not None:
            return self._number  # numbers never change once allocated
        entry = _actor_entry(self._env, txn, self._encoded)
        number, version = (None, 0) if entry is None else entry
        if self._read_version is None:
            self._read_version = version
        self._number = number
        return number

    async def _read(self, key: bytes) -> bytes | None:
        env = self._env

        def read(txn: Txn) -> bytes | None:
            number = self._note_read(txn)
            if number is None:
                return None
            return txn.get(_NUMBER.pack(number) + key, db=env.records)

        return await env.read(read)

    async def _read_keys(self, prefix: bytes) -> list[bytes]:
        env = self._env

        def read(txn: Txn) -> list[bytes]:
            number = self._note_read(txn)
            return [] if number is None else _keys_with_prefix(env, txn, number, prefix)

        return await env.read(read)

    async def _commit(self, writes: Writes) -> None:
        env, actor, encoded, read_version = self._env, self.actor, self._encoded, self._read_version
        size = sum(len(key) + (0 if value is None else len(value)) for key, value in writes.items())

        def apply(txn: Txn) -> None:
            _apply(env, txn, actor, encoded, read_version, writes)

        batcher = self._storage._batcher
        if batcher is None:
            await env.write(apply, size_hint=size)
        else:
            await batcher.submit((apply, size))


class LMDBStorage(StorageBase):
    """Storage in an LMDB environment shared by every ``LMDBStorage`` on that directory."""

    def __init__(self, directory: str, options: LMDBOptions | None = None) -> None:
        opts = options or LMDBOptions()
        self._env = acquire(directory, opts)
        self._options = opts
        self.path = self._env.path
        self._batcher: Batcher[WriteJob, object] | None = None
        if opts.group_commit:
            # shared: the batches serve every caller of this storage, whoever led last.
            self._batcher = Batcher(
                self._env.write_batch,
                max_batch=opts.max_batch,
                in_flight_error=_in_flight,
                shared=True,
            )

    @property
    def batch_stats(self) -> tuple[int, int]:
        """(batches, commits) written through group commit so far (``(0, 0)`` if off)."""
        batcher = self._batcher
        return (0, 0) if batcher is None else (batcher.batches, batcher.items)

    @property
    def options(self) -> LMDBOptions:
        return self._options

    def map_size(self) -> int:
        """This process's current map size in bytes (it grows on demand)."""
        return self._env.map_size()

    def __repr__(self) -> str:
        return f"LMDBStorage('lmdb://{self.path}')"

    async def _get(self, actor: ActorId, key: bytes) -> bytes | None:
        env, encoded = self._env, actor.encode()

        def read(txn: Txn) -> bytes | None:
            entry = _actor_entry(env, txn, encoded)
            if entry is None:
                return None
            return txn.get(_NUMBER.pack(entry[0]) + key, db=env.records)

        return await env.read(read)

    async def _list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        env, encoded = self._env, actor.encode()

        def read(txn: Txn) -> list[bytes]:
            entry = _actor_entry(env, txn, encoded)
            return [] if entry is None else _keys_with_prefix(env, txn, entry[0], prefix)

        return await env.read(read)

    def _transaction(self, actor: ActorId) -> _LMDBTransaction:
        return _LMDBTransaction(self, actor)

    async def _close(self) -> None:
        if self._batcher is not None:
            await self._batcher.wait_idle()
        await self._env.release()


def _in_flight() -> CommitOutcomeUnknownError:
    return CommitOutcomeUnknownError(
        "the task writing this commit's batch was cancelled; the writer thread may "
        "still have committed it"
    )


_OPTIONS = {
    "map_size": as_size,
    "max_map_size": as_size,
    "sync": as_bool,
    "metasync": as_bool,
    "max_readers": as_int,
    "readahead": as_bool,
    "group_commit": as_bool,
    "max_batch": as_int,
}


def _directory(parsed: StorageURL) -> str:
    host = parsed.host or ""
    if host in ("", ".", ".."):
        directory = host + parsed.path
    else:
        raise ConfigError(
            f"lmdb:// URLs name a directory: lmdb:///abs/dir or lmdb://./rel/dir, "
            f"not a host ({host!r})"
        )
    if not directory:
        raise ConfigError("the lmdb:// URL names no directory: lmdb:///abs/dir or lmdb://./dir")
    return os.path.abspath(directory)


def _options(parsed: StorageURL, kwargs: dict[str, Any]) -> LMDBOptions:
    values = merge_options("lmdb", parsed.options, kwargs, _OPTIONS)
    for name in ("map_size", "max_map_size"):
        if name in values:
            if values[name] < _MIN_MAP_SIZE:
                raise ConfigError(f"option {name!r} of lmdb:// must be at least {_MIN_MAP_SIZE}")
            values[name] = round_to_page(values[name])
    options = LMDBOptions(**values)
    if options.max_map_size < options.map_size:
        raise ConfigError(
            f"option 'max_map_size' of lmdb:// ({options.max_map_size}) is smaller than "
            f"'map_size' ({options.map_size})"
        )
    if not 1 <= options.max_readers <= 65536:
        raise ConfigError("option 'max_readers' of lmdb:// must be between 1 and 65536")
    if options.max_batch < 1:
        raise ConfigError("option 'max_batch' of lmdb:// must be at least 1")
    return options


def open_lmdb(url: str, **options: Any) -> LMDBStorage:
    """Factory for ``lmdb:///abs/dir`` and ``lmdb://./rel/dir``; creates the directory.

    Options (URL query or keywords): ``map_size`` (initial, default 64MiB),
    ``max_map_size`` (growth ceiling, default 1TiB), ``sync`` and ``metasync``
    (default true), ``max_readers`` (default 126), ``readahead`` (default true),
    ``group_commit`` (default true: concurrent commits share one write
    transaction and fsync) and ``max_batch`` (commits per batch, default 128).
    """
    parsed = StorageURL.parse(url)
    resolved = _options(parsed, options)
    return LMDBStorage(_directory(parsed), resolved)
