"""``ActorContext``: what a handler sees — its id, its state, and buffered KV."""

from __future__ import annotations

from typing import Generic, TypeVar

from kelpie.actor.id import ActorId
from kelpie.actor.keys import USER, user_key, user_prefix
from kelpie.storage.protocol import Transaction

__all__ = ["ActorContext"]

S = TypeVar("S")


class ActorContext(Generic[S]):
    """The handler's view of one invocation.

    Every ``kv_*`` write goes into the invocation's storage transaction and is
    committed together with the state, or not at all; reads see the
    invocation's own writes. A context is valid only during its invocation.
    """

    __slots__ = ("_txn", "actor_id", "state", "wrote")

    def __init__(self, actor_id: ActorId, state: S, txn: Transaction) -> None:
        self.actor_id = actor_id
        self.state = state
        self._txn = txn
        self.wrote = False

    async def kv_get(self, key: bytes) -> bytes | None:
        return await self._txn.get(user_key(key))

    async def kv_set(self, key: bytes, value: bytes) -> None:
        await self._txn.set(user_key(key), value)
        self.wrote = True

    async def kv_delete(self, key: bytes) -> None:
        await self._txn.delete(user_key(key))
        self.wrote = True

    async def kv_exists(self, key: bytes) -> bool:
        return await self._txn.get(user_key(key)) is not None

    async def kv_list_keys(self, prefix: bytes = b"") -> list[bytes]:
        strip = len(USER)
        return [key[strip:] for key in await self._txn.list_keys(user_prefix(prefix))]
