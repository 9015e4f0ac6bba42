"""``memory://``: the in-process reference backend, and the base of the simulator.

``memory://`` opens a fresh, private store; ``memory://NAME`` opens the store
called NAME in this process, shared by every storage opened with that URL
(so a test can close and reopen it). Nothing survives the process.

Commits go through the same group-commit path as the durable backends
(``kelpie.storage.group_commit``), so the simulator exercises it: a commit
waits ``commit_latency`` seconds (default 0: one turn of the event loop, or
virtual time in a simulation) as if for an fsync, and every commit that
arrived meanwhile is applied with it, each with its own version check. A
batch is applied at once at the end of its wait -- all of it or, if its
writer is cancelled first (a simulated crash), none of it. Options:
``group_commit`` (default true), ``max_batch``, ``commit_latency``.

``delete_actor`` goes through the same batches as commits, so it is ordered
with them. It leaves nothing of the actor behind; versions still never repeat
(ADR 0013): the store keeps one counter, ``deletes``, which every delete
moves past the deleted actor's version, and an actor created afterwards
starts from it. A transaction that read an actor as absent notes the counter
and conflicts if it moved (coarse: any delete in the store counts).
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kelpie.errors import ConfigError, StorageUnavailableError, TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage.base import BufferedTransaction, StorageBase, Writes
from kelpie.storage.group_commit import DEFAULT_MAX_BATCH, Batcher
from kelpie.storage.options import as_bool, as_float, as_int, merge_options
from kelpie.storage.url import StorageURL

__all__ = ["MemoryStorage", "open_memory"]


@dataclass(slots=True)
class _ActorRecords:
    """One actor's keys and values, and its keys in order for listings.

    The order is brought up to date by the listing that needs it, not by
    every commit: a commit only notes the keys it added or removed since.
    Commits mostly touch keys that came and went between listings (an
    outbox entry, say), and keeping a list of hundreds of keys sorted on
    each one made every commit walk it (ADR 0022). When more keys changed
    since the last listing than it held, the order is dropped altogether
    and the next listing sorts the keys afresh: a commit then notes nothing.
    """

    values: dict[bytes, bytes] = field(default_factory=dict)
    listed: list[bytes] | None = None
    """The keys, sorted, as of the last listing (``added``/``removed`` since);
    ``None``: no order kept, the next listing sorts ``values``."""
    added: set[bytes] = field(default_factory=set)
    """Keys stored since the last listing, not in ``listed``."""
    removed: set[bytes] = field(default_factory=set)
    """Keys of ``listed`` deleted since the last listing."""
    version: int = 0

    def sorted_keys(self) -> list[bytes]:
        """Every key, in order."""
        keys = self.listed
        if keys is None:
            keys = sorted(self.values)
        else:
            if self.removed:
                removed = self.removed
                keys = [key for key in keys if key not in removed]
                removed.clear()
            if self.added:
                keys = sorted(keys + sorted(self.added))  # two sorted runs: merged in one pass
                self.added.clear()
        self.listed = keys
        return keys

    def keys_with_prefix(self, prefix: bytes) -> list[bytes]:
        keys = self.sorted_keys()
        start = bisect.bisect_left(keys, prefix)
        end = start
        while end < len(keys) and keys[end].startswith(prefix):
            end += 1
        return keys[start:end]

    def apply(self, writes: Writes) -> None:
        values = self.values
        listed = self.listed
        if listed is None:  # no order kept: nothing to note
            for key, value in writes.items():
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
            self.version += 1
            return
        for key, value in writes.items():
            if value is None:
                if values.pop(key, None) is not None:
                    if key in self.added:
                        self.added.discard(key)
                    else:
                        self.removed.add(key)
            else:
                size = len(values)
                values[key] = value
                if len(values) != size:  # a new key (one dict probe, not two)
                    if key in self.removed:
                        self.removed.discard(key)
                    else:
                        self.added.add(key)
        if len(self.added) + len(self.removed) > len(listed):
            # Merging would cost about what sorting afresh costs: stop noting.
            self.listed = None
            self.added.clear()
            self.removed.clear()
        self.version += 1


_ABSENT = _ActorRecords()
"""What a transaction sees of an actor with no records (never written to)."""


def _order(actor: ActorId) -> tuple[str, str]:
    return actor.namespace, actor.id


@dataclass
class _Store:
    actors: dict[ActorId, _ActorRecords] = field(default_factory=dict)
    """Every actor with a version record (some may have no keys left)."""
    listed: list[ActorId] = field(default_factory=list)
    """The actors with at least one key, in ``ActorId`` order (what ``list_actors`` pages)."""
    deletes: int = 0
    """Moved past the deleted actor's version by every ``delete_actor``; a new actor's
    versions start above it, so no version of an actor ever comes back (ADR 0013)."""
    on_apply: Callable[[ActorId, Writes], None] | None = None
    """Simulator hook: called with each commit's actor and writes as it is applied
    (a ``delete_actor``: every key it removed, each mapped to ``None``)."""

    def apply(
        self, actor: ActorId, read_version: int | None, read_deletes: int, writes: Writes
    ) -> None:
        """Apply one commit, or raise ``TransactionConflictError`` and apply nothing."""
        records = self.actors.get(actor)
        if records is None:
            _check_version(actor, _ABSENT, read_version)
            if read_version == 0 and read_deletes != self.deletes:
                raise _deleted_since_read(actor)
            records = self.actors[actor] = _ActorRecords(version=self.deletes)
        else:
            _check_version(actor, records, read_version)
        had_keys = bool(records.values)
        records.apply(writes)
        if had_keys != bool(records.values):
            if had_keys:
                self._unlist(actor)
            else:
                bisect.insort(self.listed, actor, key=_order)

    def delete_actor(self, actor: ActorId) -> Writes | None:
        """Remove ``actor`` entirely; the keys it had, each mapped to None (None: absent)."""
        records = self.actors.pop(actor, None)
        if records is None:
            return None
        self.deletes = max(self.deletes, records.version) + 1
        if records.values:
            self._unlist(actor)
        return dict.fromkeys(records.sorted_keys())

    def _unlist(self, actor: ActorId) -> None:
        listed = self.listed
        at = bisect.bisect_left(listed, _order(actor), key=_order)
        del listed[at]

    def list_actors(
        self, namespace: str | None, after: ActorId | None, limit: int
    ) -> list[ActorId]:
        listed = self.listed
        start = 0 if namespace is None else bisect.bisect_left(listed, (namespace, ""), key=_order)
        if after is not None:
            start = max(start, bisect.bisect_right(listed, _order(after), key=_order))
        page = listed[start : start + limit]
        if namespace is not None and page and page[-1].namespace != namespace:
            page = [actor for actor in page if actor.namespace == namespace]
        return page


_named_stores: dict[str, _Store] = {}


class _MemoryTransaction(BufferedTransaction):
    _storage: MemoryStorage

    def __init__(self, storage: MemoryStorage, actor: ActorId) -> None:
        super().__init__(storage, actor)
        self._store = storage._store
        self._read_version: int | None = None
        self._read_deletes = 0

    def _records(self) -> _ActorRecords:
        """The actor's records now (``_ABSENT`` if none); the first call notes their version."""
        store = self._store
        records = store.actors.get(self.actor, _ABSENT)
        if self._read_version is None:
            self._read_version = records.version
            self._read_deletes = store.deletes
        return records

    async def _read(self, key: bytes) -> bytes | None:
        return self._records().values.get(key)

    async def _read_keys(self, prefix: bytes) -> list[bytes]:
        return self._records().keys_with_prefix(prefix)

    async def _validate(self) -> None:
        store = self._store
        _check_version(self.actor, store.actors.get(self.actor, _ABSENT), self._read_version)
        if self._read_version == 0 and self._read_deletes != store.deletes:
            raise _deleted_since_read(self.actor)

    async def _commit(self, writes: Writes) -> None:
        commit = (self.actor, self._read_version, self._read_deletes, writes)
        batcher = self._storage._batcher
        if batcher is None:
            self._storage._apply_now(commit)
        else:
            await batcher.submit(commit)


_Commit = tuple[ActorId, int | None, int, Writes | None]
"""(actor, version read or None, ``deletes`` at that read, writes); writes None: delete_actor."""


def _check_version(actor: ActorId, records: _ActorRecords, read_version: int | None) -> None:
    if read_version is not None and read_version != records.version:
        raise TransactionConflictError(
            f"another commit on {actor} landed after this transaction read it"
        )


def _deleted_since_read(actor: ActorId) -> TransactionConflictError:
    return TransactionConflictError(
        f"an actor was deleted after this transaction read {actor} as absent "
        "(the store counts deletes, not which actor they removed: ADR 0013)"
    )


def _apply(store: _Store, commit: _Commit) -> Writes | None:
    """Apply one commit or delete; what the simulator's observer sees (None: nothing)."""
    actor, read_version, read_deletes, writes = commit
    if writes is None:
        return store.delete_actor(actor)
    store.apply(actor, read_version, read_deletes, writes)
    return writes


def _apply_batch(store: _Store, batch: Sequence[_Commit]) -> list[BaseException | None]:
    outcomes: list[BaseException | None] = []
    on_apply = store.on_apply
    for commit in batch:
        try:
            applied = _apply(store, commit)
        except TransactionConflictError as exc:
            outcomes.append(exc)
            continue
        outcomes.append(None)
        if on_apply is not None and applied is not None:
            on_apply(commit[0], applied)
    return outcomes


def _in_flight() -> StorageUnavailableError:
    return StorageUnavailableError(
        "the batch holding this commit was cancelled before it was applied; nothing was written"
    )


class MemoryStorage(StorageBase):
    """Every actor's records in a dict, keys kept sorted for ``list_keys``."""

    def __init__(
        self,
        name: str | None = None,
        *,
        group_commit: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
        commit_latency: float = 0.0,
        _store: _Store | None = None,
    ) -> None:
        if max_batch < 1:
            raise ConfigError("option 'max_batch' of memory:// must be at least 1")
        if not commit_latency >= 0:
            raise ConfigError("option 'commit_latency' of memory:// must be >= 0 seconds")
        self.name = name
        if _store is not None:
            self._store = _store
        elif name is None:
            self._store = _Store()
        else:
            self._store = _named_stores.setdefault(name, _Store())
        self._group_commit = group_commit
        self._max_batch = max_batch
        self._commit_latency = commit_latency
        self.on_batch: Callable[[int, float], None] | None = None
        """Simulator hook: called with (commits, wait) as a batch starts waiting; if it
        raises, writing the batch failed: nothing of it is applied and every commit
        in it gets that error."""
        self._batcher: Batcher[_Commit, BaseException | None] | None = None
        if group_commit:
            self._batcher = Batcher(
                self._write_batch, max_batch=max_batch, in_flight_error=_in_flight
            )

    def handle(self) -> MemoryStorage:
        """Another storage on the same store, with its own commit queue and lifecycle.

        What a second process opening the same database would get; the
        simulator gives each simulated process one, so a crash cancels only
        that process's batches.
        """
        return MemoryStorage(
            self.name,
            group_commit=self._group_commit,
            max_batch=self._max_batch,
            commit_latency=self._commit_latency,
            _store=self._store,
        )

    def commits_on(self, actor: ActorId) -> int:
        """``actor``'s version in this store (0 if it has no records).

        Every commit on the actor moves it on, and it never comes back to a
        value it had (a delete moves the store's floor past it): the
        simulator compares it to tell whether anything landed since it last
        looked. Without deletes it is the number of commits on the actor.
        """
        return self._store.actors.get(actor, _ABSENT).version

    def observe_commits(self, observer: Callable[[ActorId, Writes], None] | None) -> None:
        """Call ``observer(actor, writes)`` as each commit is applied, on every handle of
        this store (the simulator watches leases with it)."""
        self._store.on_apply = observer

    @property
    def batch_stats(self) -> tuple[int, int]:
        """(batches, commits) written through group commit so far (``(0, 0)`` if off)."""
        batcher = self._batcher
        return (0, 0) if batcher is None else (batcher.batches, batcher.items)

    @property
    def batch_in_flight(self) -> int:
        """Commits of the batch waiting to be applied now (for the simulator's crash report)."""
        return 0 if self._batcher is None else self._batcher.in_flight

    async def _write_batch(self, batch: Sequence[_Commit]) -> list[BaseException | None]:
        if self.on_batch is not None:
            self.on_batch(len(batch), self._commit_latency)
        if self._commit_latency > 0:
            await asyncio.sleep(self._commit_latency)  # the "fsync"; others queue meanwhile
        return _apply_batch(self._store, batch)

    def _apply_now(self, commit: _Commit) -> None:
        """Without group commit: apply at once, or raise the commit's conflict."""
        (outcome,) = _apply_batch(self._store, (commit,))
        if outcome is not None:
            raise outcome

    def __repr__(self) -> str:
        return f"MemoryStorage(memory://{self.name or ''})"

    async def _get(self, actor: ActorId, key: bytes) -> bytes | None:
        records = self._store.actors.get(actor)
        return None if records is None else records.values.get(key)

    async def _list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        records = self._store.actors.get(actor)
        return [] if records is None else records.keys_with_prefix(prefix)

    def _transaction(self, actor: ActorId) -> _MemoryTransaction:
        return _MemoryTransaction(self, actor)

    async def _list_actors(
        self, namespace: str | None, after: ActorId | None, limit: int
    ) -> list[ActorId]:
        return self._store.list_actors(namespace, after, limit)

    async def _delete_actor(self, actor: ActorId) -> None:
        delete: _Commit = (actor, None, 0, None)
        batcher = self._batcher
        if batcher is None:
            self._apply_now(delete)
        else:
            await batcher.submit(delete)

    async def _close(self) -> None:
        if self._batcher is not None:
            await self._batcher.wait_idle()


_OPTIONS = {"group_commit": as_bool, "max_batch": as_int, "commit_latency": as_float}


def open_memory(url: str, **options: Any) -> MemoryStorage:
    """Factory for ``memory://[NAME]``.

    Options: ``group_commit`` (default true), ``max_batch`` (default 128) and
    ``commit_latency`` (seconds each batch waits before it is applied,
    default 0).
    """
    parsed = StorageURL.parse(url)
    values = merge_options("memory", parsed.options, options, _OPTIONS)
    name = (parsed.host or "") + parsed.path.rstrip("/")
    return MemoryStorage(name or None, **values)
