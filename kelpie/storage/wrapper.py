"""Delegating bases for storage wrappers (fault injection, metrics, tests).

Subclass ``StorageWrapper``/``TransactionWrapper`` and override only what the
wrapper changes; everything else, lifecycle included, is passed to ``inner``
with the contract's semantics (leaving ``async with`` after an explicit
``commit()``/``abort()`` does nothing more).
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from kelpie.identity import ActorId
from kelpie.storage import lifecycle
from kelpie.storage.lifecycle import DEFAULT_PAGE
from kelpie.storage.protocol import Storage, Transaction

__all__ = ["StorageWrapper", "TransactionWrapper"]


class TransactionWrapper:
    """A ``Transaction`` that passes every call to ``inner``."""

    def __init__(self, inner: Transaction) -> None:
        self.inner = inner
        self.ended = False
        """``commit()`` or ``abort()`` was called."""

    async def get(self, key: bytes) -> bytes | None:
        return await self.inner.get(key)

    async def set(self, key: bytes, value: bytes) -> None:
        await self.inner.set(key, value)

    async def delete(self, key: bytes) -> None:
        await self.inner.delete(key)

    async def list_keys(self, prefix: bytes = b"") -> list[bytes]:
        return await self.inner.list_keys(prefix)

    async def commit(self) -> None:
        self.ended = True
        await self.inner.commit()

    async def abort(self) -> None:
        self.ended = True
        await self.inner.abort()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.ended:
            return
        if exc_type is None:
            await self.commit()
        else:
            await self.abort()


class StorageWrapper:
    """A ``Storage`` that passes every call to ``inner``; ``close()`` closes it."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    async def get(self, actor: ActorId, key: bytes) -> bytes | None:
        return await self.inner.get(actor, key)

    async def set(self, actor: ActorId, key: bytes, value: bytes) -> None:
        await self.inner.set(actor, key, value)

    async def delete(self, actor: ActorId, key: bytes) -> None:
        await self.inner.delete(actor, key)

    async def list_keys(self, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        return await self.inner.list_keys(actor, prefix)

    def transaction(self, actor: ActorId) -> Transaction:
        return self.inner.transaction(actor)

    async def list_actors(
        self,
        namespace: str | None = None,
        *,
        after: ActorId | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> list[ActorId]:
        return await lifecycle.list_actors(self.inner, namespace, after=after, limit=limit)

    async def delete_actor(self, actor: ActorId) -> None:
        await lifecycle.delete_actor(self.inner, actor)

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
