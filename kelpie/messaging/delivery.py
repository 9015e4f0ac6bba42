"""Sending: the outbox staged into the sender's commit, then delivery, acks and cleanup.

``stage`` runs inside the sender's transaction after its handler returned:
it numbers each message per (sender, target), writes the outbox entries and
the counters, deletes entries already delivered (piggy-backing the cleanup
on a commit the sender makes anyway) and, when the outbox was empty before
this commit, first writes an index entry (a separate write-only commit to a
``kelpie.index`` shard) so a sweep can find the outbox after a crash. The
caches of what the sender's outbox holds are exact for the activation that
made them: every commit of the actor goes through it (the fence), and a
reload forgets them.

After the commit, one pump task per sender delivers its pending messages in
order per target through the target's mailbox (``calls.deliver``), retries
what failed transiently, dead-letters a message whose handler failed
``max_attempts`` times, and deletes the delivered entries. Nothing of this
runs inside the sender's mailbox turn, so a message to oneself cannot
deadlock.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kelpie.actor.codec import decode_json
from kelpie.errors import (
    ActorActiveElsewhereError,
    InvocationTimeoutError,
    MailboxFullError,
    RuntimeClosedError,
    StorageError,
)
from kelpie.identity import ActorId
from kelpie.messaging import calls, records
from kelpie.messaging.effects import Send
from kelpie.messaging.records import Message
from kelpie.messaging.reentrancy import CURRENT
from kelpie.storage.protocol import Storage, Transaction

if TYPE_CHECKING:
    from kelpie.messaging.service import Services

__all__ = ["Messenger", "StagedSends"]

log = logging.getLogger("kelpie.messaging")

MAX_ATTEMPTS = 5
"""Failed runs of a message's handler before it becomes a dead letter."""
RETRIES = 6
"""Transient failures (storage, timeouts, a busy mailbox) a pump round retries."""


@dataclass
class _Sender:
    """What one loaded activation knows of its own outbox (exact: it made every commit)."""

    outbox: set[bytes] | None = None
    """Keys of the outbox entries as stored; ``None``: not read yet."""
    counters: dict[bytes, int] = field(default_factory=dict)
    """Target tag -> the last seq sent to it."""


class StagedSends:
    """The sends of one commit, applied to the caches and handed to the pump after it."""

    __slots__ = ("counters", "messages", "outbox", "sender", "state")

    def __init__(
        self,
        sender: ActorId,
        state: _Sender,
        outbox: set[bytes],
        counters: dict[bytes, int],
        messages: list[Message],
    ) -> None:
        self.sender = sender
        self.state = state
        self.outbox = outbox
        self.counters = counters
        self.messages = messages


def _clean_context() -> contextvars.Context:
    """The current context without the running handler's actor (pumps are nobody's turn)."""
    context = contextvars.copy_context()
    context.run(CURRENT.set, None)
    return context


class Messenger:
    """One runtime's sending side: caches, pending messages, pumps."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.storage: Storage = services.storage
        self._senders: dict[ActorId, _Sender] = {}
        self._pending: dict[ActorId, dict[bytes, Message]] = {}
        self._acked: dict[ActorId, set[bytes]] = {}
        self._attempts: dict[tuple[ActorId, bytes], int] = {}
        self._pumps: dict[ActorId, asyncio.Task[None]] = {}
        self.closing = False
        self.used = False
        """This runtime staged a message, or found an outbox to deliver."""

    # -- in the sender's transaction ------------------------------------------------

    def forget(self, sender: ActorId) -> None:
        self._senders.pop(sender, None)

    async def stage(
        self, sender: ActorId, sends: list[Send], txn: Transaction, version: int
    ) -> StagedSends:
        self.used = True
        state = self._senders.get(sender)
        if state is None:
            state = self._senders[sender] = _Sender()
        outbox = state.outbox
        if outbox is None:
            outbox = set(await txn.list_keys(records.OUTBOX))
        outbox = set(outbox)
        acked = self._acked.get(sender)
        if acked:
            for key in sorted(acked & outbox):
                await txn.delete(key)
                outbox.discard(key)
        was_empty = not outbox
        counters: dict[bytes, int] = {}
        messages: list[Message] = []
        for send in sends:
            target_tag = records.tag(send.target)
            last = counters.get(target_tag)
            if last is None:
                last = state.counters.get(target_tag)
            if last is None:
                last = records.seq_of(
                    await txn.get(records.counter_key(target_tag)), "outbox counter"
                )
            seq = last + 1
            counters[target_tag] = seq
            key = records.outbox_key(target_tag, seq)
            await txn.set(key, Message.pack(send.target, send.operation, send.payload_json))
            outbox.add(key)
            messages.append(
                Message(sender, send.target, seq, send.operation, decode_json(send.payload_json))
            )
        for target_tag, seq in counters.items():
            await txn.set(records.counter_key(target_tag), records.seq_bytes(seq))
        if was_empty and messages:
            # Before the commit: a crash after it must leave the outbox findable (ADR 0018).
            await self.services.index_put(sender, records.INDEX_OUTBOX, version)
        return StagedSends(sender, state, outbox, counters, messages)

    def committed(self, staged: StagedSends) -> None:
        """The sender's commit landed: update the caches, deliver the new messages."""
        state = staged.state
        state.outbox = staged.outbox
        state.counters.update(staged.counters)
        acked = self._acked.get(staged.sender)
        if acked:
            acked &= staged.outbox
        self.enqueue(staged.sender, staged.messages)

    # -- delivery ---------------------------------------------------------------------

    def pumping(self, sender: ActorId) -> bool:
        return sender in self._pumps

    def enqueue(self, sender: ActorId, messages: list[Message]) -> None:
        if not messages or self.closing:
            return
        self.used = True
        pending = self._pending.setdefault(sender, {})
        for message in messages:
            pending.setdefault(message.key, message)
        if sender not in self._pumps:
            task = asyncio.get_running_loop().create_task(
                self._pump(sender), name=f"kelpie-pump-{sender}", context=_clean_context()
            )
            self._pumps[sender] = task
            task.add_done_callback(lambda done: self._pump_done(sender, done))

    def _pump_done(self, sender: ActorId, task: asyncio.Task[None]) -> None:
        if self._pumps.get(sender) is task:
            del self._pumps[sender]
        if not task.cancelled() and task.exception() is not None:
            log.warning("delivery of %s's outbox failed", sender, exc_info=task.exception())

    async def _pump(self, sender: ActorId) -> None:
        while True:
            stuck = await self._deliver_pending(sender)
            await self._cleanup(sender)
            # Messages committed while this pump was cleaning up found it running: go on.
            if stuck or not self._pending.get(sender) or self.closing:
                return

    async def _deliver_pending(self, sender: ActorId) -> bool:
        """Deliver what is pending for ``sender``; True if some target must wait."""
        pending = self._pending.get(sender)
        stuck = False
        while pending:
            # Keys sort by target tag then seq: each target's messages in send order.
            by_target: dict[bytes, list[Message]] = {}
            for key in sorted(pending):
                by_target.setdefault(key[1:17], []).append(pending[key])
            delivered_any = False
            for messages in by_target.values():
                for message in messages:
                    if not await self._deliver(message):
                        break  # later messages to this target must wait for this one
                    delivered_any = True
                    pending.pop(message.key, None)
                    self._acked.setdefault(sender, set()).add(message.key)
            if not delivered_any:
                stuck = True
                break  # every target is stuck: the sweep tries again later
        if not pending and self._pending.get(sender) is pending:
            del self._pending[sender]
        return stuck

    async def _deliver(self, message: Message) -> bool:
        """Apply ``message`` at its target; False if it must wait (retried later)."""
        transient = 0
        while True:
            outcome = calls.Outcome()
            try:
                await self.services.submit(message.target, calls.deliver(message, outcome))
            except ActorActiveElsewhereError:
                # Another node owns the target: its sweep delivers; done once it applied it.
                return await self._applied_elsewhere(message)
            except RuntimeClosedError:
                return False
            except Exception as exc:
                if _transient(exc):
                    transient += 1
                    if transient > RETRIES or self.closing:
                        return False
                    await asyncio.sleep(min(1.0, 0.01 * 2**transient))
                    continue
                verdict = await self._failed(message, exc)
                if verdict is None:
                    continue
                return verdict
            self._attempts.pop((message.sender, message.key), None)
            return True

    async def _failed(self, message: Message, exc: BaseException) -> bool | None:
        """The handler failed: count it. ``None``: try again; True: dead-lettered; False: stop.

        At ``MAX_ATTEMPTS`` (counted by this runtime) the message is stored as
        a dead letter at its target, which moves the target's mark past it.
        """
        key = (message.sender, message.key)
        attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
        if attempts < MAX_ATTEMPTS:
            if self.closing:
                return False
            await asyncio.sleep(min(1.0, 0.01 * 2**attempts))
            return None
        error = f"{type(exc).__name__}: {exc}"
        log.warning(
            "message %r failed %d times (%s); stored as a dead letter at %s",
            message,
            attempts,
            error,
            message.target,
        )
        outcome = calls.Outcome()
        try:
            await self.services.submit(message.target, calls.dead_letter(message, error, outcome))
        except Exception:
            log.warning("dead-lettering %r failed", message, exc_info=True)
            return False
        self._attempts.pop(key, None)
        return True

    async def _applied_elsewhere(self, message: Message) -> bool:
        try:
            raw = await self.storage.get(
                message.target, records.high_water_key(records.tag(message.sender))
            )
            return records.seq_of(raw, "high-water mark") >= message.seq
        except Exception:
            return False

    async def _cleanup(self, sender: ActorId) -> None:
        acked = self._acked.get(sender)
        if not acked or self.closing:
            return
        keys = sorted(acked)

        def done() -> None:
            # Before the commit: if it fails the activation reloads and forgets anyway.
            state = self._senders.get(sender)
            if state is not None:
                state.outbox = None

        try:
            await self.services.submit(sender, calls.cleanup(keys, done))
        except Exception:
            log.debug("cleanup of %s's outbox failed; it is retried later", sender, exc_info=True)
            return
        left = self._acked.get(sender)
        if left is not None:
            left.difference_update(keys)
            if not left:
                del self._acked[sender]

    # -- the sweep ----------------------------------------------------------------------

    async def read_outbox(self, sender: ActorId) -> list[Message]:
        """The sender's outbox as stored (plain reads: entries never change, only go)."""
        messages = []
        for key in await self.storage.list_keys(sender, records.OUTBOX):
            value = await self.storage.get(sender, key)
            if value is not None:
                messages.append(Message.unpack(sender, key, value))
        return messages

    async def empty_at(self, sender: ActorId) -> int | None:
        """The sender's commit seq at which its outbox is empty, or ``None`` if it is not."""
        return await self.services.read_consistently(sender, _empty_outbox)

    async def close(self) -> None:
        self.closing = True
        pumps = list(self._pumps.values())
        if pumps:
            await asyncio.gather(*pumps, return_exceptions=True)


async def _empty_outbox(txn: Transaction) -> bool:
    return not await txn.list_keys(records.OUTBOX)


def _transient(exc: BaseException) -> bool:
    """Worth retrying as is: storage trouble, a timeout, a full mailbox, a gap."""
    return isinstance(
        exc, StorageError | InvocationTimeoutError | MailboxFullError | calls.GapError
    )
