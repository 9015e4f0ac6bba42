"""Shared machinery for backends: validation, write buffering, lifecycle.

A backend subclasses ``StorageBase`` and ``BufferedTransaction`` and supplies
only what differs between stores: how to read a key, how to list keys, and how
to commit a batch of writes with its conflict check. Everything the contract
requires of every backend (limits checked before anything is written,
read-your-writes, last write wins, use after close) lives here once.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from kelpie.errors import StorageClosedError, TransactionClosedError, TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage.lifecycle import DEFAULT_PAGE, check_list_arguments, unsupported
from kelpie.storage.limits import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    check_actor,
    check_key,
    check_prefix,
    check_value,
)

__all__ = [
    "BufferedTransaction",
    "StorageBase",
    "Writes",
    "buffered_deleter",
    "buffered_setter",
    "write_buffer",
]

Writes = dict[bytes, bytes | None]
"""Buffered writes of a transaction: key -> new value, or ``None`` to delete."""


class BufferedTransaction(abc.ABC):
    """A transaction that buffers writes in memory until ``commit``.

    Subclasses implement ``_read``, ``_read_keys``, ``_commit`` and ``_release``.
    ``_read``/``_read_keys`` mark the start of the conflict window the first
    time they run; ``_commit`` applies ``writes`` atomically or raises.
    ``_validate`` checks, at the commit of a transaction that only read, that
    nothing committed on the actor since its first read; the built-in backends
    compare the actor's version (one read). A subclass that does not override
    it gets a slower generic check: every value and key listing the
    transaction read is read again and must be unchanged.
    """

    _tracks_reads: bool = False
    """True when ``_validate`` is this base's generic check (reads are remembered)."""

    _plain_writes: bool = True
    """True when ``set`` and ``delete`` are this base's own: they only buffer."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._tracks_reads = cls._validate is BufferedTransaction._validate
        cls._plain_writes = (
            cls.set is BufferedTransaction.set and cls.delete is BufferedTransaction.delete
        )

    def __init__(self, storage: StorageBase, actor: ActorId) -> None:
        self._storage = storage
        self.actor = actor
        self._writes: Writes = {}
        self._open = True
        self._seen: dict[bytes, bytes | None] = {}
        """Generic validation only: the stored value each read key had when first read."""
        self._seen_keys: dict[bytes, list[bytes]] = {}
        """Generic validation only: stored keys per listed prefix, as first listed."""

    # -- what a backend supplies -------------------------------------------

    @abc.abstractmethod
    async def _read(self, key: bytes) -> bytes | None:
        """Read one stored key of ``self.actor`` (ignoring buffered writes)."""

    @abc.abstractmethod
    async def _read_keys(self, prefix: bytes) -> list[bytes]:
        """Stored keys of ``self.actor`` starting with ``prefix``, in any order."""

    @abc.abstractmethod
    async def _commit(self, writes: Writes) -> None:
        """Apply ``writes`` (never empty) atomically, or raise and apply nothing."""

    async def _release(self) -> None:
        """Free whatever the transaction holds; called once, after commit or abort."""
        return None

    async def _validate(self) -> None:
        """Raise ``TransactionConflictError`` if a commit landed on the actor since the
        first read (nothing to check if the transaction read nothing).

        Called by ``commit()`` when there is nothing to write. This generic
        version re-reads what was read: every value and listing must still be
        the same, so everything read belongs to the version current now.
        """
        for key, value in self._seen.items():
            if await self._read(key) != value:
                raise TransactionConflictError(
                    f"{self.actor} changed after this read-only transaction read it"
                )
        for prefix, keys in self._seen_keys.items():
            if sorted(await self._read_keys(prefix)) != keys:
                raise TransactionConflictError(
                    f"{self.actor} changed after this read-only transaction listed its keys"
                )

    # -- the Transaction protocol ------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise TransactionClosedError(
                f"transaction on {self.actor} was already committed or aborted"
            )
        self._storage._check_open()

    async def get(self, key: bytes) -> bytes | None:
        self._check_open()
        check_key(key)
        if key in self._writes:
            return self._writes[key]
        value = await self._read(key)
        if self._tracks_reads:
            self._seen.setdefault(key, value)
        return value

    async def set(self, key: bytes, value: bytes) -> None:
        self.buffer_set(key, value)

    def buffer_set(self, key: bytes, value: bytes) -> None:
        """``set`` without a coroutine: it only buffers (``ActorContext.kv_set`` calls it)."""
        if not self._open or self._storage._closed:
            self._check_open()  # raises the right error
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            check_key(key)  # raises the right error (or accepts a bytes subclass)
        if type(value) is not bytes or len(value) > MAX_VALUE_BYTES:
            check_value(value)
        self._writes[key] = value

    async def delete(self, key: bytes) -> None:
        self.buffer_delete(key)

    def buffer_delete(self, key: bytes) -> None:
        """``delete`` without a coroutine (see ``buffer_set``)."""
        if not self._open or self._storage._closed:
            self._check_open()  # raises the right error
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            check_key(key)  # raises the right error (or accepts a bytes subclass)
        self._writes[key] = None

    def _write_buffer(self) -> Writes | None:
        """The buffer ``buffer_set`` writes to, while the transaction and storage are open."""
        return self._writes if self._open and not self._storage._closed else None

    async def list_keys(self, prefix: bytes = b"") -> list[bytes]:
        self._check_open()
        check_prefix(prefix)
        stored = await self._read_keys(prefix)
        if self._tracks_reads:
            self._seen_keys.setdefault(prefix, sorted(stored))
        keys = set(stored)
        for key, value in self._writes.items():
            if key.startswith(prefix):
                if value is None:
                    keys.discard(key)
                else:
                    keys.add(key)
        return sorted(keys)

    async def commit(self) -> None:
        self._check_open()
        self._open = False
        try:
            if self._writes:
                await self._commit(self._writes)
            else:
                await self._validate()
        finally:
            self._writes = {}
            await self._release()

    async def abort(self) -> None:
        self._check_open()
        self._open = False
        self._writes = {}
        await self._release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._open:
            return
        if exc_type is None:
            await self.commit()
        else:
            self._open = False
            self._writes = {}
            await self._release()


def buffered_setter(txn: Any) -> Callable[[bytes, bytes], None] | None:
    """``txn.buffer_set`` if ``txn`` buffers a write without a coroutine, else ``None``.

    kelpie's own transactions do; any other ``Transaction`` (a wrapper, one
    that overrides ``set`` or ``delete``) must be written through ``await txn.set``.
    Asked of the type: a wrapper that forwards attributes to a transaction
    inside it is not taken for that transaction.
    """
    return txn.buffer_set if getattr(type(txn), "_plain_writes", False) else None


def write_buffer(txn: Any) -> Writes | None:
    """The write buffer of an open transaction of kelpie's own, else ``None``.

    For the runtime's own records (counters, marks, outbox entries), whose
    keys it builds and whose values it bounds: it writes them into the buffer
    directly, checked as ``buffer_set`` would only where a value's size
    depends on a user (a message payload). A write there is exactly a
    ``buffer_set``; ``None`` (a wrapper, one that overrides ``set``, a closed
    transaction or storage) means ``await txn.set``.
    """
    if getattr(type(txn), "_plain_writes", False):
        writes: Writes | None = txn._write_buffer()
        return writes
    return None


def buffered_deleter(txn: Any) -> Callable[[bytes], None] | None:
    """``txn.buffer_delete`` if ``txn`` buffers a delete without a coroutine, else ``None``."""
    return txn.buffer_delete if getattr(type(txn), "_plain_writes", False) else None


class StorageBase(abc.ABC):
    """Lifecycle and validation shared by the built-in backends."""

    _closed: bool = False

    @abc.abstractmethod
    async def _get(self, actor: ActorId, key: bytes) -> bytes | None:
        """Read one key outside any transaction."""

    @abc.abstractmethod
    async def _list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        """Sorted stored keys of ``actor`` starting with ``prefix``."""

    @abc.abstractmethod
    def _transaction(self, actor: ActorId) -> BufferedTransaction:
        """A new transaction on ``actor``."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release connections, files and threads; called once."""

    async def _list_actors(
        self, namespace: str | None, after: ActorId | None, limit: int
    ) -> list[ActorId]:
        """Up to ``limit`` actors with a stored record, in ``ActorId`` order, after ``after``.

        A subclass written before this method existed inherits this default,
        which says by name that the backend lacks it.
        """
        raise unsupported(self, "list_actors")

    async def _delete_actor(self, actor: ActorId) -> None:
        """Remove every record of ``actor`` atomically (see ``delete_actor``)."""
        raise unsupported(self, "delete_actor")

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError(f"{self!r} is closed")

    async def get(self, actor: ActorId, key: bytes) -> bytes | None:
        self._check_open()
        check_actor(actor)
        check_key(key)
        return await self._get(actor, key)

    async def set(self, actor: ActorId, key: bytes, value: bytes) -> None:
        async with self.transaction(actor) as txn:
            await txn.set(key, value)

    async def delete(self, actor: ActorId, key: bytes) -> None:
        async with self.transaction(actor) as txn:
            await txn.delete(key)

    async def list_keys(self, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        self._check_open()
        check_actor(actor)
        check_prefix(prefix)
        return await self._list_keys(actor, prefix)

    def transaction(self, actor: ActorId) -> BufferedTransaction:
        self._check_open()
        check_actor(actor)
        return self._transaction(actor)

    async def list_actors(
        self,
        namespace: str | None = None,
        *,
        after: ActorId | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> list[ActorId]:
        """Actors with at least one stored record, in ``ActorId`` order, paged by ``after``.

        ``namespace=None`` lists every namespace. A page shorter than ``limit``
        is the last one. ``after`` need not exist (it may have been deleted).
        """
        self._check_open()
        check_list_arguments(namespace, after, limit)
        return await self._list_actors(namespace, after, limit)

    async def delete_actor(self, actor: ActorId) -> None:
        """Remove every record of ``actor`` (state, KV, idempotency records, version) atomically.

        A transaction that read the actor before the delete fails its commit
        with ``TransactionConflictError`` -- also if the actor was created again
        meanwhile. Deleting an actor with no records does nothing.
        """
        self._check_open()
        check_actor(actor)
        await self._delete_actor(actor)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._close()

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
