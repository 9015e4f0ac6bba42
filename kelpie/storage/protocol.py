"""The ``Storage`` and ``Transaction`` protocols every backend implements.

The runtime uses nothing but these, so it runs on any conforming backend: ours,
a third party's, or a wrapper around one (fault injection, metrics). The
guarantees every implementation gives are in ``docs/backends.md`` and are
checked by the conformance suite (``kelpie.testing.conformance``).
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from kelpie.identity import ActorId

__all__ = ["Storage", "Transaction"]


@runtime_checkable
class Transaction(Protocol):
    """A buffered, all-or-nothing unit of work on one actor's records.

    Reads see the transaction's own writes. ``commit`` applies every write or
    none; if the transaction read anything and another commit on the actor
    landed after that read, ``commit`` raises ``TransactionConflictError`` --
    also when it wrote nothing, so a transaction that commits read one
    committed version of its actor (``abort`` checks nothing).
    As an async context manager it commits on normal exit and aborts on an
    exception; after an explicit ``commit()`` or ``abort()`` leaving the block
    does nothing more.
    """

    async def get(self, key: bytes) -> bytes | None: ...

    async def set(self, key: bytes, value: bytes) -> None: ...

    async def delete(self, key: bytes) -> None: ...

    async def list_keys(self, prefix: bytes = b"") -> list[bytes]: ...

    async def commit(self) -> None: ...

    async def abort(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class Storage(Protocol):
    """Per-actor key-value records with transactions; an async context manager."""

    async def get(self, actor: ActorId, key: bytes) -> bytes | None: ...

    async def set(self, actor: ActorId, key: bytes, value: bytes) -> None: ...

    async def delete(self, actor: ActorId, key: bytes) -> None: ...

    async def list_keys(self, actor: ActorId, prefix: bytes = b"") -> list[bytes]: ...

    def transaction(self, actor: ActorId) -> Transaction: ...

    async def list_actors(
        self,
        namespace: str | None = None,
        *,
        after: ActorId | None = None,
        limit: int = 1000,
    ) -> list[ActorId]:
        """Actors with at least one stored record, in ``ActorId`` order, paged by ``after``.

        Backends written before this method existed may lack it: reach it
        through ``kelpie.storage.lifecycle.list_actors``, which then raises
        ``UnsupportedOperationError``.
        """
        ...

    async def delete_actor(self, actor: ActorId) -> None:
        """Remove every record of ``actor`` atomically; a transaction that read it
        before fails its commit with ``TransactionConflictError``.

        May be missing on older backends: see ``kelpie.storage.lifecycle``.
        """
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
