"""``memory://``: the in-process reference backend, and the base of the simulator.

``memory://`` opens a fresh, private store; ``memory://NAME`` opens the store
called NAME in this process, shared by every storage opened with that URL
(so a test can close and reopen it). Nothing survives the process.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from kelpie.actor.id import ActorId
from kelpie.errors import TransactionConflictError
from kelpie.storage.base import BufferedTransaction, StorageBase, Writes
from kelpie.storage.options import merge_options
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

    async def _commit(self, writes: Writes) -> None:
        if self._read_version is not None and self._read_version != self._records.version:
            raise TransactionConflictError(
                f"another commit on {self.actor} landed after this transaction read it"
            )
        self._records.apply(writes)


class MemoryStorage(StorageBase):
    """Every actor's records in a dict, keys kept sorted for ``list_keys``."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        if name is None:
            self._store = _Store()
        else:
            self._store = _named_stores.setdefault(name, _Store())

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
        pass


def open_memory(url: str, **options: Any) -> MemoryStorage:
    """Factory for ``memory://[NAME]``; takes no options."""
    parsed = StorageURL.parse(url)
    merge_options("memory", parsed.options, options, {})
    name = (parsed.host or "") + parsed.path.rstrip("/")
    return MemoryStorage(name or None)
