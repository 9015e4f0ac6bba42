"""A ``BufferedTransaction`` subclass without ``_validate`` gets the generic check.

Third-party backends written before read-only transactions were validated
keep working and keep the consistent-reads guarantee: the base class
remembers what was read and reads it again at ``commit()``.
"""

from __future__ import annotations

import pytest

from kelpie.errors import TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage.base import BufferedTransaction, StorageBase, Writes


class _DictTransaction(BufferedTransaction):
    """A minimal third-party transaction: no version, no ``_validate``."""

    _storage: _DictStorage

    async def _read(self, key: bytes) -> bytes | None:
        self._storage.reads += 1
        return self._storage.data.get((self.actor, key))

    async def _read_keys(self, prefix: bytes) -> list[bytes]:
        return [k for (a, k) in self._storage.data if a == self.actor and k.startswith(prefix)]

    async def _commit(self, writes: Writes) -> None:
        for key, value in writes.items():
            if value is None:
                self._storage.data.pop((self.actor, key), None)
            else:
                self._storage.data[(self.actor, key)] = value


class _DictStorage(StorageBase):
    def __init__(self) -> None:
        self.data: dict[tuple[ActorId, bytes], bytes] = {}
        self.reads = 0

    async def _get(self, actor: ActorId, key: bytes) -> bytes | None:
        return self.data.get((actor, key))

    async def _list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        return sorted(k for (a, k) in self.data if a == actor and k.startswith(prefix))

    def _transaction(self, actor: ActorId) -> _DictTransaction:
        return _DictTransaction(self, actor)

    async def _close(self) -> None:
        return None


ACTOR = ActorId("third", "party")


async def test_a_changed_value_fails_the_read_only_commit() -> None:
    storage = _DictStorage()
    await storage.set(ACTOR, b"a", b"1")
    txn = storage.transaction(ACTOR)
    assert await txn.get(b"a") == b"1"
    await storage.set(ACTOR, b"a", b"2")
    with pytest.raises(TransactionConflictError):
        await txn.commit()


async def test_a_changed_listing_fails_the_read_only_commit() -> None:
    storage = _DictStorage()
    txn = storage.transaction(ACTOR)
    assert await txn.list_keys() == []
    await storage.set(ACTOR, b"new", b"1")
    with pytest.raises(TransactionConflictError):
        await txn.commit()


async def test_unchanged_reads_commit_after_reading_each_key_once_more() -> None:
    storage = _DictStorage()
    await storage.set(ACTOR, b"a", b"1")
    async with storage.transaction(ACTOR) as txn:
        assert await txn.get(b"a") == b"1"
        assert await txn.get(b"a") == b"1"
        assert await txn.get(b"absent") is None
    assert storage.reads == 3 + 2  # three reads, then one re-read per distinct key


def test_built_in_backends_validate_by_version_not_by_rereading() -> None:
    from kelpie.storage.lmdb.storage import _LMDBTransaction
    from kelpie.storage.memory import _MemoryTransaction
    from kelpie.storage.redis.storage import _RedisTransaction

    assert _DictTransaction._tracks_reads
    for cls in (_MemoryTransaction, _LMDBTransaction, _RedisTransaction):
        assert not cls._tracks_reads, cls
