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

from kelpie.identity import ActorId

__all__ = ["Leases"]


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
