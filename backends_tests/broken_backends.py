"""Deliberately broken storages, each with one bug the conformance suite must catch.

Each wraps a correct ``memory://NAME`` store and breaks one guarantee; they are
registered as URL schemes so the suite can be pointed at them like at any
third-party backend.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from kelpie.identity import ActorId
from kelpie.storage.memory import MemoryStorage
from kelpie.storage.protocol import Storage, Transaction
from kelpie.storage.registry import open_storage, register_scheme
from kelpie.storage.url import StorageURL
from kelpie.storage.wrapper import StorageWrapper

__all__ = ["BUGS", "register_broken_schemes"]

BUGS = (
    "lost-update",
    "partial-commit",
    "unsorted-keys",
    "naive-ids",
    "empty-is-absent",
    "unvalidated-reads",
    "versions-repeat",
    "delete-keeps-a-key",
)


class _BrokenTransaction:
    def __init__(self, storage: _BrokenStorage, actor: ActorId) -> None:
        self._storage = storage
        self._actor = actor
        self._inner = storage.inner.transaction(storage.alias(actor))
        self._writes: dict[bytes, bytes | None] = {}

    async def get(self, key: bytes) -> bytes | None:
        value = await self._inner.get(key)
        return self._storage.mangle_value(value)

    async def set(self, key: bytes, value: bytes) -> None:
        await self._inner.set(key, value)
        self._writes[key] = value

    async def delete(self, key: bytes) -> None:
        await self._inner.delete(key)
        self._writes[key] = None

    async def list_keys(self, prefix: bytes = b"") -> list[bytes]:
        return self._storage.mangle_keys(await self._inner.list_keys(prefix))

    async def commit(self) -> None:
        bug = self._storage.bug
        if bug == "lost-update":
            # Replays the writes blind, so no conflict is ever detected.
            await self._inner.abort()
            async with self._storage.inner.transaction(self._storage.alias(self._actor)) as txn:
                for key, value in self._writes.items():
                    await (txn.delete(key) if value is None else txn.set(key, value))
            return
        if bug == "partial-commit" and len(self._writes) > 1:
            await self._inner.abort()
            key, value = next(iter(self._writes.items()))
            async with self._storage.inner.transaction(self._storage.alias(self._actor)) as txn:
                await (txn.delete(key) if value is None else txn.set(key, value))
            return
        if bug == "unvalidated-reads" and not self._writes:
            await self._inner.abort()  # a read-only transaction "has nothing to commit"
            return
        await self._inner.commit()

    async def abort(self) -> None:
        await self._inner.abort()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self.commit()
            else:
                await self.abort()
        except Exception:
            if exc_type is None:
                raise


class _BrokenStorage(StorageWrapper):
    def __init__(self, inner: Storage, bug: str) -> None:
        super().__init__(inner)
        self.bug = bug

    def alias(self, actor: ActorId) -> ActorId:
        if self.bug == "naive-ids":
            return ActorId("naive", f"{actor.namespace}:{actor.id}"[:128])
        return actor

    def mangle_value(self, value: bytes | None) -> bytes | None:
        return None if self.bug == "empty-is-absent" and value == b"" else value

    def mangle_keys(self, keys: list[bytes]) -> list[bytes]:
        return keys[::-1] if self.bug == "unsorted-keys" else keys

    async def get(self, actor: ActorId, key: bytes) -> bytes | None:
        return self.mangle_value(await self.inner.get(self.alias(actor), key))

    async def set(self, actor: ActorId, key: bytes, value: bytes) -> None:
        await self.inner.set(self.alias(actor), key, value)

    async def delete(self, actor: ActorId, key: bytes) -> None:
        await self.inner.delete(self.alias(actor), key)

    async def list_keys(self, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        return self.mangle_keys(await self.inner.list_keys(self.alias(actor), prefix))

    async def delete_actor(self, actor: ActorId) -> None:
        if self.bug == "delete-keeps-a-key":
            # Deletes the keys it listed, but one past the first: the first key survives.
            keys = await self.inner.list_keys(actor)
            async with self.inner.transaction(actor) as txn:
                for key in keys[1:]:
                    await txn.delete(key)
            return
        await self.inner.delete_actor(self.alias(actor))
        if self.bug == "versions-repeat" and isinstance(self.inner, MemoryStorage):
            # Forgets the store-wide counter that keeps a deleted actor's versions from
            # coming back: an actor created again counts its versions from 1 again, and a
            # transaction that read it before the delete commits over the new one.
            self.inner._store.deletes = 0

    def transaction(self, actor: ActorId) -> Transaction:
        if self.bug in ("lost-update", "partial-commit"):
            return _BrokenTransaction(self, actor)
        if self.bug == "naive-ids":
            return self.inner.transaction(self.alias(actor))
        return _BrokenTransaction(self, actor)


def _factory(bug: str) -> Any:
    def open_broken(url: str, **options: Any) -> Storage:
        parsed = StorageURL.parse(url)
        name = (parsed.host or "") + parsed.path
        return _BrokenStorage(open_storage(f"memory://broken-{bug}-{name}"), bug)

    return open_broken


def register_broken_schemes() -> None:
    """Make ``broken-BUG://NAME`` URLs open a memory store with that bug."""
    for bug in BUGS:
        register_scheme(f"broken-{bug}", _factory(bug))


register_broken_schemes()
