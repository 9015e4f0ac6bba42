"""A Storage wrapper whose next commits or reads fail the way a test scripts them.

The runtime uses nothing but the Storage protocol, so wrapping any backend is
enough to put a crash exactly where a test wants it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Literal, Self

from kelpie import ActorId, CommitOutcomeUnknownError, Storage, StorageUnavailableError
from kelpie.storage.protocol import Transaction

Outcome = Literal["not-applied", "applied-reply-lost", "not-applied-reply-lost"]
WritePredicate = Callable[[ActorId, dict[bytes, bytes | None]], bool]


class _ScriptedTransaction:
    def __init__(self, owner: ScriptedStorage, actor: ActorId, inner: Transaction) -> None:
        self._owner = owner
        self._actor = actor
        self._inner = inner
        self._writes: dict[bytes, bytes | None] = {}
        self._ended = False

    async def get(self, key: bytes) -> bytes | None:
        self._owner._maybe_fail_read()
        return await self._inner.get(key)

    async def set(self, key: bytes, value: bytes) -> None:
        await self._inner.set(key, value)
        self._writes[key] = value

    async def delete(self, key: bytes) -> None:
        await self._inner.delete(key)
        self._writes[key] = None

    async def list_keys(self, prefix: bytes = b"") -> list[bytes]:
        self._owner._maybe_fail_read()
        return await self._inner.list_keys(prefix)

    async def commit(self) -> None:
        self._ended = True
        outcome = self._owner._take_commit_fault(self._actor, self._writes)
        if outcome is None:
            await self._inner.commit()
        elif outcome == "applied-reply-lost":
            await self._inner.commit()
            raise CommitOutcomeUnknownError("scripted: commit applied, reply lost")
        else:
            await self._inner.abort()
            if outcome == "not-applied":
                raise StorageUnavailableError("scripted: crash before the commit applied")
            raise CommitOutcomeUnknownError("scripted: commit not applied, reply lost")

    async def abort(self) -> None:
        self._ended = True
        await self._inner.abort()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ended:
            return
        if exc_type is None:
            await self.commit()
        else:
            await self.abort()


class ScriptedStorage:
    """Delegates to ``inner``; fails the commits and reads a test asks it to."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
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

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
