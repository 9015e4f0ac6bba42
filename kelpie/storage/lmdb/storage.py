"""``lmdb://``: embedded, durable storage in an LMDB environment.

``lmdb:///abs/dir`` or ``lmdb://./rel/dir`` (relative to the working directory
at open time). Layout (ADR 0001), in three named databases:

```
meta     b"format" -> b"1";  b"next_actor" -> 8-byte counter;  b"deletes" -> 8-byte counter
actors   ActorId.encode() -> actor number (8 bytes) + version (8 bytes)
records  actor number (8 bytes, big-endian) + key -> value
```

The actor table keeps record keys short (LMDB keys are at most 511 bytes; an
encoded id plus a key can reach 514) and makes ``list_keys`` one cursor range.
Reads run in a fresh read snapshot on the caller's thread and never wait for
the writer; commits run on the environment's writer thread, concurrent ones
sharing one write transaction (group commit): each checks its actor's version
(ADR 0002), then applies its writes and bumps the version. See
docs/backends/lmdb.md.

``list_actors`` merges ranges of the ``actors`` table into ``ActorId`` order
(``kelpie.storage.encoded_order``), skipping actors with no record left (the
writer marks them: ``kelpie.storage.lmdb.listing``).
``delete_actor`` is a write job like a commit: it removes the actor's records
and entry and moves ``deletes`` past the actor's version; a new actor's
versions start above ``deletes``, so no version of an actor ever comes back
(ADR 0013). ``deletes`` is the only thing a delete leaves, one per store;
stores written before it existed read it as 0.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Coroutine
from typing import Any

from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    CorruptStateError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.base import BufferedTransaction, StorageBase, Writes
from kelpie.storage.encoded_order import list_encoded
from kelpie.storage.group_commit import Batcher
from kelpie.storage.lmdb.env import (
    LMDBOptions,
    SharedEnv,
    Txn,
    WriteJob,
    WriteTxn,
    acquire,
    round_to_page,
)
from kelpie.storage.lmdb.listing import ActorIndex, MarkEmptyActors, after_commit, is_marked, unmark
from kelpie.storage.options import as_bool, as_int, as_size, merge_options
from kelpie.storage.url import StorageURL

__all__ = ["LMDBOptions", "LMDBStorage", "open_lmdb"]

_NUMBER = struct.Struct(">Q")
_ENTRY = struct.Struct(">QQ")
_NEXT_ACTOR = b"next_actor"
_DELETES = b"deletes"
_MIN_MAP_SIZE = 32 * 1024


def _unpack_entry(raw: bytes, encoded: bytes) -> tuple[int, int]:
    """An actor entry's (number, version)."""
    if len(raw) != _ENTRY.size:
        raise CorruptStateError(f"the LMDB actor entry of {encoded!r} is {len(raw)} bytes")
    number, version = _ENTRY.unpack(raw)
    return number, version


def _keys_from(env: SharedEnv, txn: Txn, start: bytes) -> list[bytes]:
    """The record keys that start with ``start`` (actor number + prefix), number cut off."""
    cursor = txn.cursor(db=env.records)
    keys: list[bytes] = []
    if cursor.set_range(start):
        for key in cursor.iternext(values=False):
            if not key.startswith(start):
                break
            keys.append(key[_NUMBER.size :])
    return keys


def _counter(env: SharedEnv, txn: Txn, name: bytes, default: int) -> int:
    """A counter of the ``meta`` database (``default`` if it was never written)."""
    raw = txn.get(name, db=env.meta)
    if raw is None:
        return default
    if len(raw) != _NUMBER.size:
        raise CorruptStateError(f"the LMDB counter {name!r} is {len(raw)} bytes")
    number: int = _NUMBER.unpack(raw)[0]
    return number


def _next_number(env: SharedEnv, txn: Txn) -> int:
    """The number the next new actor gets."""
    return _counter(env, txn, _NEXT_ACTOR, 1)


def _deletes(env: SharedEnv, txn: Txn) -> int:
    """The store's deletes counter: above every version of every deleted actor."""
    return _counter(env, txn, _DELETES, 0)


def _deleted_since_read(actor: ActorId) -> TransactionConflictError:
    return TransactionConflictError(
        f"an actor was deleted after this transaction read {actor} as absent "
        "(the store counts deletes, not which actor they removed: ADR 0013)"
    )


class _Commit:
    """One transaction's commit, as the writer thread applies it (a ``WriteJob``).

    ``check`` reads the actor's entry and raises ``TransactionConflictError``
    if it moved since the transaction read it (ADR 0002); ``write`` then
    writes the records and bumps the version, in the same write transaction.
    A new actor's first version is one above the store's deletes counter.
    """

    __slots__ = (
        "_actor",
        "_encoded",
        "_env",
        "_new",
        "_number",
        "_read_deletes",
        "_read_version",
        "_version",
        "_writes",
    )

    def __init__(
        self,
        env: SharedEnv,
        actor: ActorId,
        encoded: bytes,
        read_version: int | None,
        read_deletes: int,
        writes: Writes,
    ) -> None:
        self._env = env
        self._actor = actor
        self._encoded = encoded
        self._read_version = read_version
        self._read_deletes = read_deletes
        self._writes = writes
        self._number = 0
        self._version = 0
        self._new = False

    @property
    def size_hint(self) -> int:
        return sum(
            len(key) + (0 if value is None else len(value)) for key, value in self._writes.items()
        )

    def check(self, w: WriteTxn) -> None:
        raw = w.actors.get(self._encoded)
        number, version = (0, 0) if raw is None else _unpack_entry(raw, self._encoded)
        if self._read_version is not None and version != self._read_version:
            raise TransactionConflictError(
                f"another commit on {self._actor} landed after this transaction read it"
            )
        self._new = raw is None
        if raw is None:
            deletes = _deletes(self._env, w.txn)
            if self._read_version == 0 and deletes != self._read_deletes:
                raise _deleted_since_read(self._actor)
            self._number = _next_number(self._env, w.txn)
            self._version = deletes
        else:
            self._number = number
            self._version = version

    def write(self, w: WriteTxn) -> None:
        number = self._number
        if self._new:
            w.txn.put(_NEXT_ACTOR, _NUMBER.pack(number + 1), db=self._env.meta)
        prefix = _NUMBER.pack(number)
        records = w.records
        wrote = False
        for key, value in self._writes.items():
            if value is None:
                w.txn.delete(prefix + key, db=self._env.records)
            else:
                records.put(prefix + key, value)
                wrote = True
        w.actors.put(self._encoded, _ENTRY.pack(number, self._version + 1))
        if not (wrote and self._new):  # a new actor with a record has no mark to remove
            after_commit(w, self._env, self._encoded, prefix, wrote)


class _DeleteActor:
    """``delete_actor`` as the writer thread applies it (a ``WriteJob``, batched with commits).

    Removes the actor's records and entry, and moves the deletes counter past
    the actor's version; nothing if the actor has no entry.
    """

    __slots__ = ("_deletes", "_encoded", "_entry", "_env")

    size_hint = 0

    def __init__(self, env: SharedEnv, encoded: bytes) -> None:
        self._env = env
        self._encoded = encoded
        self._entry: tuple[int, int] | None = None
        self._deletes = 0

    def check(self, w: WriteTxn) -> None:
        raw = w.actors.get(self._encoded)
        self._entry = None if raw is None else _unpack_entry(raw, self._encoded)
        self._deletes = _deletes(self._env, w.txn)

    def write(self, w: WriteTxn) -> None:
        if self._entry is None:
            return
        number, version = self._entry
        prefix = _NUMBER.pack(number)
        records = w.records
        if records.set_range(prefix):
            # delete() moves to the next record; past the last one key() is b"".
            while records.key().startswith(prefix) and records.delete():
                pass
        w.txn.delete(self._encoded, db=self._env.actors)
        unmark(w, self._env, self._encoded)
        deletes = max(self._deletes, version) + 1
        w.txn.put(_DELETES, _NUMBER.pack(deletes), db=self._env.meta)


class _LMDBTransaction(BufferedTransaction):
    _storage: LMDBStorage

    def __init__(self, storage: LMDBStorage, actor: ActorId) -> None:
        super().__init__(storage, actor)
        self._env = storage._env
        self._encoded = actor.encode()
        self._read_version: int | None = None
        # Reading the actor as absent (version 0) also notes the deletes counter.
        self._read_deletes = 0

    def _note_entry(self, txn: Txn) -> bytes | None:
        """The actor's key prefix in this snapshot (None: never committed); the first
        read notes its version (and, if absent, the deletes counter)."""
        raw = txn.get(self._encoded, db=self._env.actors)
        if raw is None:
            prefix, version = None, 0
        else:
            number, version = _unpack_entry(raw, self._encoded)
            prefix = _NUMBER.pack(number)
        if self._read_version is None:
            self._read_version = version
            if raw is None:
                self._read_deletes = _deletes(self._env, txn)
        return prefix

    def _get_in(self, txn: Txn, key: bytes) -> bytes | None:
        prefix = self._note_entry(txn)
        return None if prefix is None else txn.get(prefix + key, db=self._env.records)

    def _keys_in(self, txn: Txn, key_prefix: bytes) -> list[bytes]:
        prefix = self._note_entry(txn)
        return [] if prefix is None else _keys_from(self._env, txn, prefix + key_prefix)

    # _read, _read_keys and _commit are plain methods that return the coroutine
    # doing the work: no coroutine frame of their own on the event loop's hot path.
    def _read(self, key: bytes) -> Coroutine[Any, Any, bytes | None]:
        return self._env.read(self._get_in, key)

    def _read_keys(self, prefix: bytes) -> Coroutine[Any, Any, list[bytes]]:
        return self._env.read(self._keys_in, prefix)

    def _version_in(self, txn: Txn, _: None) -> tuple[int, int]:
        """(the actor's version, the deletes counter if the actor is absent, else 0)."""
        raw = txn.get(self._encoded, db=self._env.actors)
        if raw is None:
            return 0, _deletes(self._env, txn)
        return _unpack_entry(raw, self._encoded)[1], 0

    async def _validate(self) -> None:
        if self._read_version is None:
            return
        # Always a fresh snapshot: a commit landing after the last read (not only
        # between reads) must fail this commit (guarantee 5, ADR 0010).
        version, deletes = await self._env.read(self._version_in, None)
        if version != self._read_version:
            raise TransactionConflictError(
                f"another commit on {self.actor} landed after this read-only transaction read it"
            )
        if version == 0 and deletes != self._read_deletes:
            raise _deleted_since_read(self.actor)

    def _commit(self, writes: Writes) -> Coroutine[Any, Any, None]:
        job = _Commit(
            self._env, self.actor, self._encoded, self._read_version, self._read_deletes, writes
        )
        batcher = self._storage._batcher
        return self._env.write(job) if batcher is None else batcher.submit(job)


class LMDBStorage(StorageBase):
    """Storage in an LMDB environment shared by every ``LMDBStorage`` on that directory."""

    def __init__(self, directory: str, options: LMDBOptions | None = None) -> None:
        opts = options or LMDBOptions()
        self._env = acquire(directory, opts)
        self._options = opts
        self.path = self._env.path
        self._batcher: Batcher[WriteJob, None] | None = None
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
        return await self._env.read(self._get_in, (actor.encode(), key))

    async def _list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        return await self._env.read(self._keys_in, (actor.encode(), prefix))

    def _get_in(self, txn: Txn, where: tuple[bytes, bytes]) -> bytes | None:
        encoded, key = where
        raw = txn.get(encoded, db=self._env.actors)
        if raw is None:
            return None
        number, _ = _unpack_entry(raw, encoded)
        return txn.get(_NUMBER.pack(number) + key, db=self._env.records)

    def _keys_in(self, txn: Txn, where: tuple[bytes, bytes]) -> list[bytes]:
        encoded, prefix = where
        raw = txn.get(encoded, db=self._env.actors)
        if raw is None:
            return []
        number, _ = _unpack_entry(raw, encoded)
        return _keys_from(self._env, txn, _NUMBER.pack(number) + prefix)

    def _transaction(self, actor: ActorId) -> _LMDBTransaction:
        return _LMDBTransaction(self, actor)

    async def _list_actors(
        self, namespace: str | None, after: ActorId | None, limit: int
    ) -> list[ActorId]:
        found = await self._env.read(self._actors_in, (namespace, after, limit))
        if found is None:  # a store of an earlier release: mark its emptied actors once
            await self._env.write(MarkEmptyActors(self._env))
            found = await self._env.read(self._actors_in, (namespace, after, limit))
        assert found is not None  # marked in a committed write transaction: stays marked
        return found

    def _actors_in(
        self, txn: Txn, query: tuple[str | None, ActorId | None, int]
    ) -> list[ActorId] | None:
        """The page, or None if the store's emptied actors are not marked yet."""
        if not is_marked(self._env, txn):
            return None
        return list_encoded(ActorIndex(self._env, txn), *query)

    async def _delete_actor(self, actor: ActorId) -> None:
        job = _DeleteActor(self._env, actor.encode())
        batcher = self._batcher
        await (self._env.write(job) if batcher is None else batcher.submit(job))

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
        raise ConfigError(
            f"the lmdb:// URL {parsed.render()!r} names no directory: "
            f"lmdb:///abs/dir or lmdb://./dir"
        )
    absolute = os.path.abspath(directory)
    for candidate in (absolute, os.path.realpath(absolute)):
        if os.path.dirname(candidate) == candidate:  # "/", "//", a link to "/"
            raise ConfigError(
                f"the lmdb:// URL {parsed.render()!r} names the filesystem root "
                f"({candidate}); LMDB would put data.mdb and lock.mdb there: name a "
                f"directory of its own, e.g. lmdb:///var/lib/kelpie or lmdb://./kelpie-data"
            )
    return absolute


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
