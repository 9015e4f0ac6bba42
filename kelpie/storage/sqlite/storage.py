"""``SQLiteStorage``: the ``Storage`` protocol over one ``Database`` file.

A transaction notes the actor's version at its first read (every read returns
the version with its data, from one snapshot); its commit is a ``CommitJob``
that the writer thread applies only if the version has not moved, then bumps
it. Concurrent commits share one SQLite transaction through the group-commit
``Batcher``.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from kelpie.errors import CommitOutcomeUnknownError, TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage.base import BufferedTransaction, StorageBase, Writes
from kelpie.storage.group_commit import Batcher
from kelpie.storage.sqlite.database import (
    CommitJob,
    Database,
    DeleteJob,
    SQLiteOptions,
    deleted_since_read,
)

__all__ = ["SQLiteStorage"]


class _SQLiteTransaction(BufferedTransaction):
    _storage: SQLiteStorage

    def __init__(self, storage: SQLiteStorage, actor: ActorId) -> None:
        super().__init__(storage, actor)
        self._db = storage._db
        self._encoded = actor.encode()
        self._read_version: int | None = None
        self._read_deletes = 0  # the deletes counter, if the first read found no actor

    async def _read(self, key: bytes) -> bytes | None:
        version, deletes, value = self._db.read_value(self._encoded, key)
        if self._read_version is None:
            self._read_version, self._read_deletes = version, deletes
        return value

    async def _read_keys(self, prefix: bytes) -> list[bytes]:
        version, deletes, keys = self._db.read_keys(self._encoded, prefix)
        if self._read_version is None:
            self._read_version, self._read_deletes = version, deletes
        return keys

    async def _validate(self) -> None:
        if self._read_version is None:
            return
        version, deletes = self._db.read_version(self._encoded)
        if version != self._read_version:
            raise TransactionConflictError(
                f"another commit on {self.actor} landed after this read-only transaction read it"
            )
        if deletes != self._read_deletes:
            raise deleted_since_read(self.actor)

    def _commit(self, writes: Writes) -> Coroutine[Any, Any, None]:
        job = CommitJob(self.actor, self._encoded, self._read_version, self._read_deletes, writes)
        batcher = self._storage._batcher
        return self._db.write(job) if batcher is None else batcher.submit(job)


class SQLiteStorage(StorageBase):
    """Storage in one SQLite file (WAL mode); any number may share the file."""

    def __init__(self, path: str, options: SQLiteOptions | None = None) -> None:
        opts = options or SQLiteOptions()
        self.path = path
        self._options = opts
        self._db = Database(path, opts)
        self._batcher: Batcher[CommitJob | DeleteJob, None] | None = None
        if opts.group_commit:
            self._batcher = Batcher(
                self._db.write_batch,
                max_batch=opts.max_batch,
                in_flight_error=_in_flight,
                shared=True,
            )

    @property
    def options(self) -> SQLiteOptions:
        return self._options

    @property
    def batch_stats(self) -> tuple[int, int]:
        """(batches, commits) written through group commit so far (``(0, 0)`` if off)."""
        batcher = self._batcher
        return (0, 0) if batcher is None else (batcher.batches, batcher.items)

    def __repr__(self) -> str:
        return f"SQLiteStorage('sqlite://{self.path}')"

    async def _get(self, actor: ActorId, key: bytes) -> bytes | None:
        return self._db.read_value(actor.encode(), key)[2]

    async def _list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        return self._db.read_keys(actor.encode(), prefix)[2]

    def _transaction(self, actor: ActorId) -> _SQLiteTransaction:
        return _SQLiteTransaction(self, actor)

    async def _list_actors(
        self, namespace: str | None, after: ActorId | None, limit: int
    ) -> list[ActorId]:
        return self._db.list_actors(namespace, after, limit)

    async def _delete_actor(self, actor: ActorId) -> None:
        job = DeleteJob(actor, actor.encode())
        batcher = self._batcher
        await (self._db.write(job) if batcher is None else batcher.submit(job))

    async def _close(self) -> None:
        if self._batcher is not None:
            await self._batcher.wait_idle()
        await self._db.close()


def _in_flight() -> CommitOutcomeUnknownError:
    return CommitOutcomeUnknownError(
        "the task writing this commit's batch was cancelled; the writer thread may "
        "still have committed it"
    )
