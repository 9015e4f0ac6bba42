"""Reading what a runtime stored, straight from the storage (no runtime, no faults).

Invariant checkers must not trust the code under test to report on itself, so
they read the records behind its back: the state record and the actor's KV
pairs, decoded with the runtime's own layout (``kelpie.actor.keys``, ADR 0004).
"""

from __future__ import annotations

from typing import Any, Protocol

from kelpie.actor.codec import JsonCodec, StateCodec, StateRecord
from kelpie.actor.keys import STATE_KEY, USER, user_key, user_prefix
from kelpie.identity import ActorId
from kelpie.storage.protocol import Storage

__all__ = ["Inspector", "KelpieInspector"]


class Inspector(Protocol):
    """Reads a runtime's records of one actor from a storage."""

    async def state(self, storage: Storage, actor: ActorId, state_type: type[Any]) -> Any | None:
        """The committed state, or ``None`` if the actor never committed."""
        ...

    async def kv(self, storage: Storage, actor: ActorId, key: bytes) -> bytes | None:
        """The committed value of the actor's own ``key``."""
        ...

    async def kv_keys(self, storage: Storage, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        """The actor's own keys starting with ``prefix``, sorted."""
        ...


class KelpieInspector:
    """Reads the records of ``kelpie.runtime.Runtime`` (state envelope + ``u``-keys)."""

    def __init__(self, codec: StateCodec | None = None) -> None:
        self.codec: StateCodec = codec if codec is not None else JsonCodec()

    async def state(self, storage: Storage, actor: ActorId, state_type: type[Any]) -> Any | None:
        raw = await storage.get(actor, STATE_KEY)
        if raw is None:
            return None
        record = StateRecord.decode(raw, f"actor {actor}")
        return self.codec.decode(record.payload, state_type)

    async def kv(self, storage: Storage, actor: ActorId, key: bytes) -> bytes | None:
        return await storage.get(actor, user_key(key))

    async def idempotency_count(self, storage: Storage, actor: ActorId) -> int:
        """How many keyed commits the actor's state record counts (0 if none stored)."""
        raw = await storage.get(actor, STATE_KEY)
        return 0 if raw is None else StateRecord.decode(raw, f"actor {actor}").idempotency_count

    async def kv_keys(self, storage: Storage, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        strip = len(USER)
        return [k[strip:] for k in await storage.list_keys(actor, user_prefix(prefix))]
