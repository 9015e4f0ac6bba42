"""Actor leases for runtimes that share a store (ADR 0007).

The lease lives in the actor's state record (its owner's node id), so taking,
renewing and releasing it are ordinary fenced commits. Expiry needs no shared
clock: a node that finds another node's lease watches the record's commit
sequence, and only when it has not moved for ``lease_seconds`` of this node's
own loop time (the owner renews by committing at least every third of that)
may it take the lease over. Safety never depends on leases: a zombie that lost
its lease fails its next commit on the sequence fence.
"""

from __future__ import annotations

import asyncio

from kelpie.actor.codec import StateRecord
from kelpie.actor.keys import STATE_KEY
from kelpie.errors import CorruptStateError
from kelpie.identity import ActorId
from kelpie.storage.protocol import Storage

__all__ = ["Leases", "stored_lease"]


async def stored_lease(storage: Storage, actor_id: ActorId) -> tuple[str, int]:
    """The lease owner (``""``: none) and commit sequence the actor's state record names.

    No record, or one this kelpie cannot parse, names no owner (``("", 0)``):
    an undecodable record must stay deletable.
    """
    raw = await storage.get(actor_id, STATE_KEY)
    if raw is None:
        return "", 0
    try:
        record = StateRecord.decode(raw, f"actor {actor_id}")
    except CorruptStateError:
        return "", 0
    return record.owner, record.seq


class Leases:
    """This node's id, the lease length, and what it has seen of others' leases."""

    def __init__(self, node_id: str, lease_seconds: float) -> None:
        self.node_id = node_id
        self.seconds = lease_seconds
        self.renew_after = lease_seconds / 3
        self._seen: dict[ActorId, tuple[str, int, float]] = {}

    def may_take(self, actor_id: ActorId, owner: str, seq: int) -> bool:
        """Whether this node may hold ``actor_id``, whose record names ``owner`` at ``seq``."""
        if owner in ("", self.node_id):
            self._seen.pop(actor_id, None)
            return True
        now = asyncio.get_running_loop().time()
        seen = self._seen.get(actor_id)
        if seen is None or seen[0] != owner or seen[1] != seq:
            self._seen[actor_id] = (owner, seq, now)
            return False
        if now - seen[2] >= self.seconds:
            del self._seen[actor_id]
            return True
        return False

    def forget(self, actor_id: ActorId) -> None:
        """Drop what was seen of ``actor_id``'s lease (it was deleted)."""
        self._seen.pop(actor_id, None)
