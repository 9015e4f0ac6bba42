"""A Storage wrapper whose next commits or reads fail the way a test scripts them.

The runtime uses nothing but the Storage protocol, so wrapping any backend is
enough to put a crash exactly where a test wants it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from kelpie import ActorId, CommitOutcomeUnknownError, Storage, StorageUnavailableError
from kelpie.storage.protocol import Transaction
from kelpie.storage.wrapper import StorageWrapper, TransactionWrapper

Outcome = Literal["not-applied", "applied-reply-lost", "not-applied-reply-lost"]
WritePredicate = Callable[[ActorId, dict[bytes, bytes | None]], bool]


class _ScriptedTransaction(TransactionWrapper):
    def __init__(self, owner: ScriptedStorage, actor: ActorId, inner: Transaction) -> None:
        super().__init__(inner)
        self._owner = owner
        self._actor = actor
        self._writes: dict[bytes, bytes | None] = {}

    async def get(self, key: bytes) -> bytes | None:
        self._owner._maybe_fail_read()
        return await self.inner.get(key)

    async def set(self, key: bytes, value: bytes) -> None:
        await self.inner.set(key, value)
        self._writes[key] = value

    async def delete(self, key: bytes) -> None:
        await self.inner.delete(key)
        self._writes[key] = None

    async def list_keys(self, prefix: bytes = b"") -> list[bytes]:
        self._owner._maybe_fail_read()
        return await self.inner.list_keys(prefix)

    async def commit(self) -> None:
        self.ended = True
        outcome = self._owner._take_commit_fault(self._actor, self._writes)
        if outcome is None:
            await self.inner.commit()
        elif outcome == "applied-reply-lost":
            await self.inner.commit()
            raise CommitOutcomeUnknownError("scripted: commit applied, reply lost")
        else:
            await self.inner.abort()
            if outcome == "not-applied":
                raise StorageUnavailableError("scripted: crash before the commit applied")
            raise CommitOutcomeUnknownError("scripted: commit not applied, reply lost")


class ScriptedStorage(StorageWrapper):
    """Delegates to ``inner``; fails the commits and reads a test asks it to."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self._commit_faults: list[tuple[Outcome, WritePredicate]] = []
        self._failing_reads = 0
        self.commits_failed = 0

    def fail_next_commit(
        self, outcome: Outcome, when: WritePredicate = lambda actor, writes: True
    ) -> None:
        """The next commit for which ``when(actor, writes)`` holds fails with ``outcome``."""
        self._commit_faults.append((outcome, when))

    def fail_reads(self, count: int) -> None:
        """The next ``count`` reads raise StorageUnavailableError."""
        self._failing_reads = count

    def _take_commit_fault(
        self, actor: ActorId, writes: dict[bytes, bytes | None]
    ) -> Outcome | None:
        for index, (outcome, when) in enumerate(self._commit_faults):
            if when(actor, writes):
                del self._commit_faults[index]
                self.commits_failed += 1
                return outcome
        return None

    def _maybe_fail_read(self) -> None:
        if self._failing_reads > 0:
            self._failing_reads -= 1
            raise StorageUnavailableError("scripted: read failed")

    async def get(self, actor: ActorId, key: bytes) -> bytes | None:
        self._maybe_fail_read()
        return await self.inner.get(actor, key)

    async def set(self, actor: ActorId, key: bytes, value: bytes) -> None:
        async with self.transaction(actor) as txn:
            await txn.set(key, value)

    async def delete(self, actor: ActorId, key: bytes) -> None:
        async with self.transaction(actor) as txn:
            await txn.delete(key)

    async def list_keys(self, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        self._maybe_fail_read()
        return await self.inner.list_keys(actor, prefix)

    def transaction(self, actor: ActorId) -> _ScriptedTransaction:
        return _ScriptedTransaction(self, actor, self.inner.transaction(actor))
