"""Coverage paths: what a run exercised, counted, so a storm can fail on a path never taken.

A fault that never fires proves nothing, and neither does a code path that
never runs. ``sim.count(path)`` counts a path; the harness counts its own
(below), workloads count theirs and list the ones a storm must take in
``required_paths``. A storm of at least ``MIN_SEEDS`` seeds fails if a
required path totals zero (``StormResult.never_taken``).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ATTEMPT_TIMEOUT",
    "BUFFERED_WRITES",
    "CHAOS_DEACTIVATION",
    "CONFLICT",
    "COROUTINE_WRITES",
    "GAVE_UP_WINDOW",
    "HANDLER_REJECTION",
    "HISTORY_EXHAUSTED",
    "HISTORY_OPERATIONS",
    "IDEMPOTENCY_EVICTION",
    "IDLE_EVICTION",
    "LEASE_REDIRECT",
    "LEASE_TAKEOVER",
    "MIN_SEEDS",
    "PAUSE",
    "PROCESS_CRASH",
    "RUNTIME_WARNING",
    "UNKNOWN_NOT_APPLIED",
    "VERSION_CONFLICT",
    "ZOMBIE_REJECTED",
]

MIN_SEEDS: Final = 20
"""Storms smaller than this never fail for a path not taken (a replay of one seed)."""

CONFLICT: Final = "conflict"
"""A real conflict (fence or version check; not injected) reached a client: as a
``TransactionConflictError``, or as the ``ActorActiveElsewhereError`` that a lease
takeover which lost the race raises instead, naming the node that won."""
VERSION_CONFLICT: Final = "version_conflict"
"""The backend's version check refused a commit (another commit landed since its reads)."""
LEASE_REDIRECT: Final = "lease_redirect"
"""A client got ``ActorActiveElsewhereError`` and went to the owner."""
LEASE_TAKEOVER: Final = "lease_takeover"
"""A node took a lease over from another (checked: only after the owner stopped renewing)."""
UNKNOWN_NOT_APPLIED: Final = "unknown_not_applied"
"""``CommitOutcomeUnknownError`` for a commit that did not land (``lost_commit`` fired)."""
PROCESS_CRASH: Final = "process_crash"
PAUSE: Final = "pause"
"""A process was frozen for longer than a lease."""
ZOMBIE_REJECTED: Final = "zombie_rejected"
"""A commit of an activation that lived through a pause was refused (fence or version check)."""
ATTEMPT_TIMEOUT: Final = "attempt_timeout"
"""A client stopped waiting for a paused process and moved on."""
CHAOS_DEACTIVATION: Final = "chaos_deactivation"
BUFFERED_WRITES: Final = "buffered_writes"
"""A process started whose transactions buffer writes as kelpie's own do (ADR 0023)."""
COROUTINE_WRITES: Final = "coroutine_writes"
"""A process started whose transactions take every write through ``await txn.set``."""
IDLE_EVICTION: Final = "idle_eviction"
"""An activation ended that nobody asked to deactivate (the runtime's idle sweep)."""
IDEMPOTENCY_EVICTION: Final = "idempotency_eviction"
"""An idempotency record left its actor's window (counted from the stored records)."""
HANDLER_REJECTION: Final = "handler_rejection"
GAVE_UP_WINDOW: Final = "gave_up_window"
"""A client gave up instead of retrying: its key may have left the idempotency window."""
RUNTIME_WARNING: Final = "runtime_warning"
"""The runtime logged a warning (a lease renewal or deactivation that failed to commit)."""
HISTORY_OPERATIONS: Final = "history_operations"
HISTORY_EXHAUSTED: Final = "history_exhausted"
"""Actors whose linearizability search ran out of budget (neither proven nor refuted)."""
