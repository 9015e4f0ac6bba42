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


@dataclass
class _ActorRecords:
    values: dict[bytes, bytes] = field(default_factory=dict)
    sorted_keys: list[bytes] = field(default_factory=list)
    version: int = 0

    def keys_with_prefix(self, prefix: bytes) -> list[bytes]:
        start = bisect.bisect_left(self.sorted_keys, prefix)
        end = start
        keys = self.sorted_keys
        while end < len(keys) and keys[end].startswith(prefix):
            end += 1
        return keys[start:end]

    def apply(self, writes: Writes) -> None:
        for key, value in writes.items():
            if value is None:
                if self.values.pop(key, None) is not None:
                    del self.sorted_keys[bisect.bisect_left(self.sorted_keys, key)]
            else:
                if key not in self.values:
                    bisect.insort(self.sorted_keys, key)
                self.values[key] = value
        self.version += 1


@dataclass
class _Store:
    actors: dict[ActorId, _ActorRecords] = field(default_factory=dict)
    on_apply: Callable[[ActorId, Writes], None] | None = None
    """Simulator hook: called with each commit's actor and writes as it is applied."""

    def records(self, actor: ActorId) -> _ActorRecords:
        records = self.actors.get(actor)
        if records is None:
            records = self.actors[actor] = _ActorRecords()
        return records


_named_stores: dict[str, _Store] = {}


class _MemoryTransaction(BufferedTransaction):
    _storage: MemoryStorage

    def __init__(self, storage: MemoryStorage, actor: ActorId) -> None:
        super().__init__(storage, actor)
        self._records = storage._store.records(actor)
        self._read_version: int | None = None

    def _note_read(self) -> None:
        if self._read_version is None:
            self._read_version = self._records.version

    async def _read(self, key: bytes) -> bytes | None:
        self._note_read()
        return self._records.values.get(key)

    async def _read_keys(self, prefix: bytes) -> list[bytes]:
        self._note_read()
        return self._records.keys_with_prefix(prefix)

    async def _validate(self) -> None:
        _check_version(self.actor, self._records, self._read_version)

    async def _commit(self, writes: Writes) -> None:
        batcher = self._storage._batcher
        if batcher is None:
            _apply(self.actor, self._records, self._read_version, writes)
            on_apply = self._storage._store.on_apply
            if on_apply is not None:
                on_apply(self.actor, writes)
        else:
            await batcher.submit((self.actor, self._records, self._read_version, writes))


_Commit = tuple[ActorId, _ActorRecords, int | None, Writes]


def _check_version(actor: ActorId, records: _ActorRecords, read_version: int | None) -> None:
    if read_version is not None and read_version != records.version:
        raise TransactionConflictError(
            f"another commit on {actor} landed after this transaction read it"
        )


def _apply(
    actor: ActorId, records: _ActorRecords, read_version: int | None, writes: Writes
) -> None:
    _check_version(actor, records, read_version)
    records.apply(writes)


def _apply_batch(batch: Sequence[_Commit]) -> list[BaseException | None]:
    outcomes: list[BaseException | None] = []
    for commit in batch:
        try:
            _apply(*commit)
        except TransactionConflictError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)
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
        """How many commits have landed on ``actor`` in this store (0 if none)."""
        records = self._store.actors.get(actor)
        return 0 if records is None else records.version

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
        outcomes = _apply_batch(batch)
        on_apply = self._store.on_apply
        if on_apply is not None:
            for (actor, _, _, writes), outcome in zip(batch, outcomes, strict=True):
                if outcome is None:
                    on_apply(actor, writes)
        return outcomes

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
