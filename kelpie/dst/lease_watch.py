"""Watching leases from the store: no node takes over a lease its owner kept renewing.

Safety never depends on leases (the fence refuses a stale commit), so a bug in
lease expiry -- a node that takes an actor over while its owner is alive and
renewing -- breaks no storage invariant and no history: it only moves actors
between nodes when it must not. ``LeaseWatch`` sees every commit as the memory
store applies it (``MemoryStorage.observe_commits``) and checks the lease
rule (ADR 0007) on the state records: a commit that moves the lease from one
node straight to another may land only after the record had not moved for
``lease_seconds`` -- the owner stopped renewing. A hand-over through a
release (owner ``""``) is always allowed.
"""

from __future__ import annotations

from collections.abc import Callable

from kelpie.actor.codec import StateRecord
from kelpie.actor.keys import STATE_KEY
from kelpie.dst.coverage import LEASE_TAKEOVER
from kelpie.errors import CorruptStateError
from kelpie.identity import ActorId
from kelpie.storage.base import Writes

__all__ = ["LeaseWatch"]

_SLACK = 1e-9
"""Virtual times are sums of floats: a takeover exactly one lease later is on time."""


class LeaseWatch:
    """Checks every applied state record against the lease rule; reports through ``report``."""

    def __init__(
        self,
        lease_seconds: float,
        now: Callable[[], float],
        report: Callable[[str], None],
        count: Callable[[str], None],
    ) -> None:
        self.lease_seconds = lease_seconds
        self._now = now
        self._report = report
        self._count = count
        self._last: dict[ActorId, tuple[str, float]] = {}
        """Per actor: the owner its last commit wrote, and when that commit landed."""

    def observe(self, actor: ActorId, writes: Writes) -> None:
        raw = writes.get(STATE_KEY)
        if raw is None:
            if STATE_KEY in writes:  # the record was deleted (delete_actor): no lease left
                self._last.pop(actor, None)
            return  # not a runtime commit of the state record
        try:
            owner = StateRecord.decode(raw, str(actor)).owner
        except CorruptStateError:
            return  # a record the runtime did not write: not the lease rule's business
        now = self._now()
        previous = self._last.get(actor)
        self._last[actor] = (owner, now)
        if previous is None:
            return
        before, landed = previous
        if before in ("", owner) or owner == "":
            return
        self._count(LEASE_TAKEOVER)
        quiet = now - landed
        if quiet + _SLACK < self.lease_seconds:
            self._report(
                f"{actor}: node {owner!r} took over the lease of node {before!r} "
                f"{quiet:.6f} s after that node's last commit, before the lease "
                f"({self.lease_seconds:g} s) could expire, at t={now:.6f}"
            )
