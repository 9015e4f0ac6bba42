"""``ActorContext``: what a handler sees — its id, its state, buffered KV and messages."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from kelpie.actor.keys import USER, user_key, user_prefix
from kelpie.identity import ActorId
from kelpie.messaging.effects import Effects
from kelpie.storage.base import buffered_setter
from kelpie.storage.protocol import Transaction

__all__ = ["ActorContext"]

S = TypeVar("S")


class ActorContext(Generic[S]):
    """The handler's view of one invocation.

    Every ``kv_*`` write goes into the invocation's storage transaction and is
    committed together with the state, or not at all; reads see the
    invocation's own writes. A context is valid only during its invocation.
    """

    __slots__ = (
        "_buffer_set",
        "_marks",
        "_new_marks",
        "_txn",
        "actor_id",
        "effects",
        "read",
        "state",
        "wrote",
    )

    def __init__(self, actor_id: ActorId, state: S, txn: Transaction) -> None:
        self.actor_id = actor_id
        self.state = state
        self._txn = txn
        self.wrote = False
        self.read = False
        """A ``kv_*`` read reached the transaction: a read-only invocation must validate."""
        self.effects: Effects | None = None
        """Messages and reminder changes to commit with the invocation (kelpie.messaging)."""
        self._marks: dict[bytes, int] | None = None
        """The activation's known high-water marks (kelpie.messaging.calls, ADR 0020)."""
        self._new_marks: dict[bytes, int] | None = None
        """Marks read or written in this transaction: known once it commits."""
        # kelpie's own transactions buffer a write without a coroutine; any
        # other Transaction (a wrapper, one that overrides ``set``) goes through ``set``.
        self._buffer_set = buffered_setter(txn)

    async def kv_get(self, key: bytes) -> bytes | None:
        self.read = True
        return await self._txn.get(user_key(key))

    async def kv_set(self, key: bytes, value: bytes) -> None:
        buffer_set = self._buffer_set
        if buffer_set is not None:
            buffer_set(user_key(key), value)
        else:
            await self._txn.set(user_key(key), value)
        self.wrote = True

    async def kv_delete(self, key: bytes) -> None:
        await self._txn.delete(user_key(key))
        self.wrote = True

    async def kv_exists(self, key: bytes) -> bool:
        self.read = True
        return await self._txn.get(user_key(key)) is not None

    async def kv_list_keys(self, prefix: bytes = b"") -> list[bytes]:
        self.read = True
        strip = len(USER)
        return [key[strip:] for key in await self._txn.list_keys(user_prefix(prefix))]

    # -- messages and reminders (kelpie.messaging, docs/messaging.md) -------------

    def _effects(self) -> Effects:
        effects = self.effects
        if effects is None:
            effects = self.effects = Effects()
        return effects

    def send(self, target: ActorId, operation: str, payload: Any = None) -> None:
        """Send ``operation(payload)`` to ``target`` if, and only if, this invocation commits.

        A plain method: the message is stored with the invocation's commit
        (an outbox) and applied at the target exactly once after it, in send
        order per target. The payload is encoded now (``SerializationError``).
        """
        self._effects().send(self.actor_id, target, operation, payload)

    def set_reminder(
        self,
        name: str,
        *,
        after: float,
        operation: str,
        payload: Any = None,
        every: float | None = None,
    ) -> None:
        """Invoke ``operation(payload)`` on this actor ``after`` seconds (then ``every`` seconds).

        Committed with the invocation; replaces a reminder of the same name.
        """
        self._effects().set_reminder(name, after, operation, payload, every)

    def cancel_reminder(self, name: str) -> None:
        """Remove the reminder ``name`` when this invocation commits (absent: no-op)."""
        self._effects().cancel_reminder(name)
