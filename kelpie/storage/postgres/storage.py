"""``PostgresStorage``: the ``Storage`` protocol over one table (``database.Database``).

A transaction notes what its first read saw (every read returns the actor's
header -- incarnation and version -- or its absence and the store's deletes
counter, from the same snapshot as the data); its commit is a ``Job`` that
applies only if that is still so, then bumps the version. Concurrent commits
share one statement through the group-commit ``Batcher``.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from kelpie.errors import CommitOutcomeUnknownError, TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage.base import BufferedTransaction, StorageBase, Writes
from kelpie.storage.group_commit import Batcher
from kelpie.storage.postgres.database import Database, Job, Seen
from kelpie.storage.postgres.url import PostgresOptions

__all__ = ["PostgresStorage"]


class _PostgresTransaction(BufferedTransaction):
    _storage: PostgresStorage

    def __init__(self, storage: PostgresStorage, actor: ActorId) -> None:
        super().__init__(storage, actor)
        self._db = storage._db
        self._first: Seen | None = None

    def _note(self, seen: Seen) -> None:
        if self._first is None:
            self._first = seen

    async def _read(self, key: bytes) -> bytes | None:
        seen, value = await self._db.read_value(self.actor, key)
        self._note(seen)
        return value

    async def _read_keys(self, prefix: bytes) -> list[bytes]:
        seen, keys = await self._db.read_keys(self.actor, prefix)
        self._note(seen)
        return keys

    async def _validate(self) -> None:
        if self._first is None:
            return
        if not self._first.same_as(await self._db.read_seen(self.actor)):
            raise TransactionConflictError(
                f"another commit on {self.actor} landed after this read-only transaction read it"
            )

    def _commit(self, writes: Writes) -> Coroutine[Any, Any, None]:
        return self._storage._submit(Job(self.actor, self._first, writes))


class PostgresStorage(StorageBase):
    """Storage in one PostgreSQL table; any number of processes may share it."""

    def __init__(self, options: PostgresOptions) -> None:
        self._options = options
        self._db = Database(options)
        self._batcher: Batcher[Job, None] | None = None
        if options.group_commit:
            self._batcher = Batcher(
                self._db.write_batch,
                max_batch=options.max_batch,
                in_flight_error=_in_flight,
                shared=True,
            )

    @property
    def options(self) -> PostgresOptions:
        return self._options

    @property
    def table(self) -> str:
        return self._options.table

    @property
    def batch_stats(self) -> tuple[int, int]:
        """(batches, commits) written through group commit so far (``(0, 0)`` if off)."""
        batcher = self._batcher
        return (0, 0) if batcher is None else (batcher.batches, batcher.items)

    def __repr__(self) -> str:
        return f"PostgresStorage({self._options.where!r})"

    async def _submit(self, job: Job) -> None:
        batcher = self._batcher
        if batcher is None:
            await self._db.write(job)
        else:
            await batcher.submit(job)

    async def _get(self, actor: ActorId, key: bytes) -> bytes | None:
        return await self._db.get(actor, key)

    async def _list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        return await self._db.list_keys(actor, prefix)

    def _transaction(self, actor: ActorId) -> _PostgresTransaction:
        return _PostgresTransaction(self, actor)

    async def _list_actors(
        self, namespace: str | None, after: ActorId | None, limit: int
    ) -> list[ActorId]:
        return await self._db.list_actors(namespace, after, limit)

    async def _delete_actor(self, actor: ActorId) -> None:
        await self._submit(Job(actor, None, None))

    async def _close(self) -> None:
        try:
            if self._batcher is not None:
                await self._batcher.wait_idle()
        finally:
            await self._db.close()


def _in_flight() -> CommitOutcomeUnknownError:
    return CommitOutcomeUnknownError(
        "the task writing this commit's batch was cancelled while its statement was at "
        "the server; it may have landed: reload before deciding"
    )
