"""``Runtime(conflict_retries=N)``: how an invocation whose commit conflicted runs again.

Only a ``TransactionConflictError`` raised by the invocation's own transaction
outside its handler — the fence read, the idempotency and ring reads, the
version check of the commit, a read-only commit's validation — is retried:
then nothing of the attempt was stored, and the activation was dropped, so
the next attempt reloads the actor and builds on the commit it lost to. The
mailbox worker runs the attempts, so the actor's other invocations keep
waiting their turn. Never retried: an unknown outcome
(``CommitOutcomeUnknownError``), a handler's own exception (even a
``TransactionConflictError`` it got from elsewhere), anything else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["BACKOFF_CAP", "BACKOFF_FIRST", "ConflictRetry"]

BACKOFF_FIRST = 0.005
"""Seconds: the first retry waits between half this and this."""

BACKOFF_CAP = 0.25
"""Seconds: no retry waits longer."""


@dataclass(frozen=True, slots=True)
class ConflictRetry:
    """Up to ``retries`` more attempts, each after a jittered, growing delay."""

    retries: int
    rng: random.Random
    """The only source of the jitter (injected, so a simulation can replay it)."""

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...), on the loop's clock.

        The step doubles from ``BACKOFF_FIRST`` up to ``BACKOFF_CAP``; the delay
        is half the step plus a random part of the other half, so runtimes that
        conflicted together spread out without any retry coming at once.
        """
        step = min(BACKOFF_CAP, BACKOFF_FIRST * (1 << min(retry - 1, 32)))
        return step / 2 + self.rng.uniform(0.0, step / 2)
