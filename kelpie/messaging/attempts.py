"""Failed attempts at a message: counted at its target, dead-lettered at the limit.

A message whose handler raises is retried with backoff. Each failed attempt
is counted **at the target** (``calls.failed``, one commit there), so the
count survives restarts and is shared by every runtime delivering the
message; a message read back from an outbox has its attempt counted before
it runs (``calls.begin_attempt``), so a handler that kills its process is
counted too. At ``MAX_ATTEMPTS`` the message is stored as a dead letter at
its target, which moves the target's mark past it. ``Messenger`` (delivery)
asks ``Attempts`` what to do after each failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from kelpie.errors import (
    ActorActiveElsewhereError,
    InvocationTimeoutError,
    MailboxFullError,
    StorageError,
)
from kelpie.identity import ActorId
from kelpie.messaging import calls, records
from kelpie.messaging.inbox import Requeue
from kelpie.messaging.records import Message
from kelpie.storage.protocol import Storage

if TYPE_CHECKING:
    from kelpie.messaging.service import Services

__all__ = ["MAX_ATTEMPTS", "Attempts", "backoff", "is_transient"]

log = logging.getLogger("kelpie.messaging")

MAX_ATTEMPTS = 5
"""Failed runs of a message's handler before it becomes a dead letter."""


class Attempts:
    """One runtime's view of the failed attempts at the messages it delivers."""

    def __init__(self, services: Services, closing: Callable[[], bool]) -> None:
        self.services = services
        self.storage: Storage = services.storage
        self._closing = closing
        self._counts: dict[tuple[ActorId, bytes], int] = {}
        """Failed attempts this runtime saw, per (sender, outbox key)."""
        self._unstorable: set[tuple[ActorId, bytes]] = set()
        """Messages whose dead letter could not be stored (warned about once)."""

    async def begin(self, message: Message) -> bool | None:
        """Count the attempt about to run at the target (a message read back from an outbox).

        ``None``: counted, go on; True: applied already or now a dead letter;
        False: it must wait (a gap, trouble reaching the target).
        """
        outcome = calls.Outcome()
        try:
            await self.services.submit(
                message.target, calls.begin_attempt(message, outcome, MAX_ATTEMPTS)
            )
        except ActorActiveElsewhereError:
            return await self.applied_elsewhere(message)
        except Exception:
            log.debug("counting an attempt at %r failed; retried later", message, exc_info=True)
            return False
        if outcome.dead:
            log.warning(
                "message %r: %d attempts recorded at %s, the last cut short; stored as a dead "
                "letter there",
                message,
                outcome.attempts,
                message.target,
            )
        if outcome.applied:
            return True
        message.attempted = True
        return None

    async def failed(self, message: Message, exc: BaseException, *, counted: bool) -> bool | None:
        """The handler failed: count it. ``None``: try again; True: dead-lettered; False: stop.

        The attempt is counted at the target (``calls.failed``, one commit), so
        the count survives restarts and is shared by every runtime delivering
        it. At ``MAX_ATTEMPTS`` the message is stored as a dead letter at its
        target, which moves the target's mark past it. If the target cannot
        record the attempt, this runtime's own count bounds it the same way.
        """
        key = (message.sender, message.key)
        attempts = self._counts[key] = self._counts.get(key, 0) + 1
        error = f"{type(exc).__name__}: {exc}"
        outcome = calls.Outcome()
        message.attempted = True  # a failure record may exist from here on
        try:
            await self.services.submit(
                message.target,
                calls.failed(message, error, outcome, MAX_ATTEMPTS, counted=counted),
            )
        except Exception:
            log.info("recording a failed attempt at %r failed", message, exc_info=True)
            if attempts >= MAX_ATTEMPTS:
                return await self._dead_letter(message, attempts, error)
        else:
            attempts = max(attempts, outcome.attempts)
            if outcome.applied:
                self.forget(message)
                if outcome.dead:
                    _log_dead_letter(message, attempts, error)
                return True
        if self._closing():
            return False
        await asyncio.sleep(backoff(attempts))
        return None

    async def _dead_letter(self, message: Message, attempts: int, error: str) -> bool:
        """Store ``message`` as a dead letter at its target (counted by this runtime)."""
        outcome = calls.Outcome()
        try:
            await self.services.submit(message.target, calls.dead_letter(message, error, outcome))
        except Exception as exc:
            # Not "stored as a dead letter": it stays in the outbox and is retried (every
            # sweep, maybe for good: no runtime may serve its target's type). Said once.
            key = (message.sender, message.key)
            again = key in self._unstorable
            self._unstorable.add(key)
            log.log(
                logging.INFO if again else logging.WARNING,
                "message %r failed %d times (%s); storing it as a dead letter at %s failed "
                "too (%s: %s); retried later%s",
                message,
                attempts,
                error,
                message.target,
                type(exc).__name__,
                exc,
                " (again)" if again else " (said once; retries log at INFO)",
            )
            return False
        _log_dead_letter(message, attempts, error)
        self.forget(message)
        return True

    def forget(self, message: Message) -> None:
        """``message`` was applied or dead-lettered: nothing to count any more."""
        key = (message.sender, message.key)
        self._counts.pop(key, None)
        self._unstorable.discard(key)

    async def applied_elsewhere(self, message: Message) -> bool:
        """Its target's mark is past ``message`` (another node applied it); False if unsure."""
        # In a transaction: its first read is confirmed (Redis Cluster with
        # wait_replicas), so a mark a failover could still lose never counts.
        try:
            async with self.storage.transaction(message.target) as txn:
                raw = await txn.get(records.high_water_key(message.sender_tag))
            return records.seq_of(raw, "high-water mark") >= message.seq
        except Exception:
            return False


def _log_dead_letter(message: Message, attempts: int, error: str) -> None:
    log.warning(
        "message %r failed %d times (%s); stored as a dead letter at %s",
        message,
        attempts,
        error,
        message.target,
    )


def is_transient(exc: BaseException) -> bool:
    """Worth retrying as is: storage trouble, a timeout, a full mailbox, a gap."""
    return isinstance(
        exc, StorageError | InvocationTimeoutError | MailboxFullError | calls.GapError | Requeue
    )


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): 20 ms doubling, at most 1 s."""
    return min(1.0, 0.01 * 2.0 ** min(attempt, 8))
