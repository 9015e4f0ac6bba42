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
order per target (different targets at once) through the target's mailbox,
several senders' messages to one target in one transaction there
(``kelpie.messaging.inbox``), retries what failed transiently, has a
failed handler counted at the target and the message dead-lettered at the
limit (``kelpie.messaging.attempts``), and deletes the delivered entries. Nothing of
this runs inside the sender's mailbox turn, so a message to oneself cannot
deadlock.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kelpie.errors import ActorActiveElsewhereError, RuntimeClosedError
from kelpie.identity import ActorId
from kelpie.messaging import calls, records
from kelpie.messaging.attempts import Attempts, backoff, is_transient
from kelpie.messaging.inbox import Arrival, Inboxes
from kelpie.messaging.records import Message
from kelpie.messaging.reentrancy import CURRENT
from kelpie.storage.base import write_buffer
from kelpie.storage.limits import MAX_VALUE_BYTES
from kelpie.storage.protocol import Storage, Transaction

if TYPE_CHECKING:
    from kelpie.messaging.service import Services

__all__ = ["Messenger", "StagedSends"]

log = logging.getLogger("kelpie.messaging")

RETRIES = 6
"""Transient failures (storage, timeouts, a busy mailbox) a pump round retries."""
CLEANUP_AFTER = 0.05
"""Loop seconds a delivered outbox entry waits for a commit of its sender to delete it
before a commit of its own does."""


class _Sender:
    """What one loaded activation knows of its own outbox (exact: it made every commit)."""

    __slots__ = ("counters", "outbox", "tag")

    def __init__(self, sender_tag: bytes) -> None:
        self.tag = sender_tag
        """``records.tag`` of the sender, for the messages it sends."""
        self.outbox: set[bytes] | None = None
        """Keys of the outbox entries as stored; ``None``: not read yet."""
        self.counters: dict[bytes, int] = {}
        """Target tag -> the last seq sent to it."""


class StagedSends:
    """The sends of one commit: what it does to the sender's outbox, and its messages.

    Applied to the caches and handed to delivery once the commit landed.
    """

    __slots__ = ("added", "counters", "deleted", "messages", "sender", "state", "stored")

    def __init__(
        self,
        sender: ActorId,
        state: _Sender,
        stored: set[bytes],
        deleted: list[bytes],
        added: list[bytes],
        counters: dict[bytes, int],
        messages: list[Message],
    ) -> None:
        self.sender = sender
        self.state = state
        self.stored = stored
        """The outbox entries as stored before the commit (the cached set itself)."""
        self.deleted = deleted
        self.added = added
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
        self.attempts = Attempts(services, lambda: self.closing)
        self._pumps: dict[ActorId, asyncio.Task[None]] = {}
        self._failures: dict[ActorId, list[tuple[Message, Exception]]] = {}
        """Per sender: handed-over messages that failed, for a pump once all have landed."""
        self._cleanups: dict[ActorId, asyncio.TimerHandle] = {}
        self._cleaning: set[asyncio.Task[None]] = set()
        self.inboxes = Inboxes(services.runtime._arrive)
        self._on_landed = self._landed  # bound once: it goes with every message handed over
        self.closing = False
        self.used = False
        """This runtime staged a message, or found an outbox to deliver."""

    # -- in the sender's transaction ------------------------------------------------

    def forget(self, sender: ActorId) -> None:
        self._senders.pop(sender, None)

    async def stage(
        self, sender: ActorId, sends: list[Message], txn: Transaction, version: int
    ) -> StagedSends:
        """Write ``sends`` (``ctx.send``'s, not numbered yet) into the sender's commit."""
        self.used = True
        state = self._senders.get(sender)
        if state is None:
            state = self._senders[sender] = _Sender(records.tag(sender))
        stored = state.outbox
        if stored is None:
            stored = set(await txn.list_keys(records.OUTBOX))
        # The outbox as stored before this commit: if it holds entries, an index entry
        # covers it until a sweep sees it empty, after this commit (ADR 0018).
        was_empty = not stored
        deleted: list[bytes] = []
        writes = write_buffer(txn)  # kelpie's own: the keys below are well formed
        acked = self._acked.get(sender)
        if acked:
            deleted = sorted(acked & stored)
            for key in deleted:
                if writes is not None:
                    writes[key] = None
                else:
                    await txn.delete(key)
        counters: dict[bytes, int] = {}
        added: list[bytes] = []
        known = state.counters
        for message in sends:  # each gets its seq and key here
            target = message.target
            target_tag = records.tag(target)
            last = counters.get(target_tag)
            if last is None:
                last = known.get(target_tag)
                if last is None:
                    raw = await txn.get(records.counter_key(target_tag))
                    last = records.seq_of(raw, "outbox counter")
            seq = last + 1
            counters[target_tag] = seq
            key = records.outbox_key(target_tag, seq)
            message.seq, message.key, message.sender_tag = seq, key, state.tag
            payload_json = message.payload_json
            assert payload_json is not None  # ctx.send encoded it
            value = Message.pack(target, message.operation, payload_json)
            if writes is not None and len(value) <= MAX_VALUE_BYTES:
                writes[key] = value
            else:
                await txn.set(key, value)  # or raises ValueTooLargeError
            added.append(key)
        for target_tag, seq in counters.items():
            key, value = records.counter_key(target_tag), records.seq_bytes(seq)
            if writes is not None:
                writes[key] = value
            else:
                await txn.set(key, value)
        if was_empty and sends:
            # Before the commit: a crash after it must leave the outbox findable (ADR 0018).
            await self.services.index_put(sender, records.INDEX_OUTBOX, version)
        return StagedSends(sender, state, stored, deleted, added, counters, sends)

    def committed(self, staged: StagedSends) -> None:
        """The sender's commit landed: update the caches, deliver the new messages."""
        state = staged.state
        outbox = staged.stored  # the cached set itself, or the one read in this commit
        deleted = staged.deleted
        if deleted:
            outbox.difference_update(deleted)
        outbox.update(staged.added)
        state.outbox = outbox
        state.counters.update(staged.counters)
        sender = staged.sender
        acked = self._acked.get(sender)
        if acked:
            if deleted:
                acked.difference_update(deleted)
            if acked:
                acked &= outbox
        messages = staged.messages
        if (
            len(messages) == 1
            and sender not in self._pending
            and not (self._pumps and sender in self._pumps)
            and not (self._failures and sender in self._failures)
            and not self.closing
        ):
            # The common case, as _enqueue and _hand would do it: one new message (a
            # fresh seq: not among the acked keys), nothing else of the sender's pending.
            message = messages[0]
            self.used = True
            self._pending[sender] = {message.key: message}
            try:
                message.flight = self.inboxes.hand_over(message, self._on_landed)
            except Exception as exc:  # nothing else in flight: the pump retries or reports it
                self._start_pump(sender, [(message, exc)])
            return
        self._enqueue(sender, messages, acked)

    # -- delivery ---------------------------------------------------------------------

    def pumping(self, sender: ActorId) -> bool:
        """Something of this runtime is delivering ``sender``'s messages."""
        return sender in self._pumps or self._in_flight(sender)

    def _in_flight(self, sender: ActorId) -> bool:
        pending = self._pending.get(sender)
        return pending is not None and any(m.flight is not None for m in pending.values())

    def enqueue(self, sender: ActorId, messages: list[Message]) -> None:
        self._enqueue(sender, messages, self._acked.get(sender))

    def _enqueue(self, sender: ActorId, messages: list[Message], acked: set[bytes] | None) -> None:
        """``enqueue``, given what of the sender's outbox is known delivered (``acked``)."""
        if not messages or self.closing:
            return
        self.used = True
        pending = None
        for message in messages:
            if acked and message.key in acked:  # read back, delivered since: only to delete
                self._cleanup_later(sender)
            else:
                if pending is None:
                    pending = self._pending.get(sender)
                    if pending is None:
                        pending = self._pending[sender] = {}
                pending.setdefault(message.key, message)
        if pending is not None:
            self._hand(sender, pending)

    def _hand(self, sender: ActorId, pending: dict[bytes, Message] | None = None) -> None:
        """Hand each target's next pending message straight to it, unless a pump has them.

        Straight: no task and no wake-up of one; the target's worker calls
        ``_landed`` once the transaction that carried the message is over
        (``message.flight`` is set meanwhile). One message per target is in
        flight at a time, so each target gets the sender's messages in order.
        A pump takes over, once nothing is in flight, whatever needs retries,
        attempt counting or a read-back outbox's first attempt.
        """
        if pending is None:
            pending = self._pending.get(sender)
        if (
            not pending
            or (self._pumps and sender in self._pumps)
            or (self._failures and sender in self._failures)
        ):
            return
        if len(pending) == 1:
            messages: Iterable[Message] = pending.values()  # the common case
            busy: set[bytes] | None = None
        else:  # keys sort by target tag, then seq: each target's in send order
            messages = [pending[key] for key in sorted(pending)]
            busy = {m.key[1:17] for m in messages if m.flight is not None}
        for message in messages:
            if message.recovered:
                if not busy and message.flight is None:
                    self._start_pump(sender, [])
                return
        for message in messages:
            if message.flight is not None:
                continue
            if busy is not None:
                target_tag = message.key[1:17]
                if target_tag in busy:
                    continue
                busy.add(target_tag)
            try:
                message.flight = self.inboxes.hand_over(message, self._on_landed)
            except Exception as exc:  # the pump retries or reports it
                if self._in_flight(sender):  # once the last flight has landed
                    self._failures[sender] = [(message, exc)]
                else:
                    self._start_pump(sender, [(message, exc)])
                return

    def _landed(self, arrival: Arrival, error: Exception | None) -> None:
        """A message handed straight over was applied (``error`` None) or was not."""
        message = arrival.message
        message.flight = None
        sender = message.sender
        pending = self._pending.get(sender)
        acked = None
        if error is not None:
            self._failures.setdefault(sender, []).append((message, error))
        else:
            acked = self._delivered(sender, {} if pending is None else pending, message)
        if self._failures and sender in self._failures:
            if not self._in_flight(sender):  # the last in flight: the pump takes over
                self._start_pump(sender, self._failures.pop(sender))
            return
        if pending:
            self._hand(sender, pending)
        elif pending is not None:
            del self._pending[sender]
            self._cleanup_later(sender, acked)

    def _start_pump(self, sender: ActorId, failed: list[tuple[Message, Exception]]) -> None:
        task = asyncio.get_running_loop().create_task(
            self._pump(sender, failed), name=f"kelpie-pump-{sender}", context=_clean_context()
        )
        self._pumps[sender] = task
        task.add_done_callback(lambda done: self._pump_done(sender, done))

    def _pump_done(self, sender: ActorId, task: asyncio.Task[None]) -> None:
        if self._pumps.get(sender) is task:
            del self._pumps[sender]
        if not task.cancelled() and task.exception() is not None:
            log.warning("delivery of %s's outbox failed", sender, exc_info=task.exception())

    async def _pump(self, sender: ActorId, failed: list[tuple[Message, Exception]]) -> None:
        """Deliver ``sender``'s pending messages; first those whose delivery raised (``failed``).

        One pass: what is enqueued meanwhile is handed straight over once the
        pump is done, unless a target had to wait (the sweep or the sender's
        next commit tries again; an immediate retry could spin).
        """
        stuck = False
        try:
            pending = self._pending.get(sender, {})
            for message, error in sorted(failed, key=lambda pair: pair[0].key):
                # Not delivered: later messages to its target wait (the sweep tries again).
                if not await self._deliver_in_order(sender, pending, [message], error):
                    stuck = True
            if not stuck:
                stuck = await self._deliver_pending(sender)
        finally:
            # Now, not in a done callback: a message enqueued from here on needs a new pump.
            if self._pumps.get(sender) is asyncio.current_task():
                del self._pumps[sender]
        if not stuck:
            self._hand(sender)
        if sender in self._pending and not self._pending[sender]:
            del self._pending[sender]  # nothing left, nothing in flight
        self._cleanup_later(sender)

    async def _deliver_pending(self, sender: ActorId) -> bool:
        """Deliver what is pending for ``sender`` now; True if some target must wait.

        Each target's messages go in send order, different targets' at once.
        """
        pending = self._pending.get(sender)
        if not pending:
            return False
        # Keys sort by target tag then seq: each target's messages in send order.
        by_target: dict[bytes, list[Message]] = {}
        for key in sorted(pending):
            by_target.setdefault(key[1:17], []).append(pending[key])
        chains = [self._deliver_in_order(sender, pending, m) for m in by_target.values()]
        delivered = [await chains[0]] if len(chains) == 1 else await asyncio.gather(*chains)
        return not all(delivered)

    async def _deliver_in_order(
        self,
        sender: ActorId,
        pending: dict[bytes, Message],
        messages: list[Message],
        error: Exception | None = None,
    ) -> bool:
        """Deliver ``messages`` (one target's) in order; True if all were delivered.

        ``error``: what the first one's delivery raised already (``_deliver``).
        """
        for message in messages:
            if not await self._deliver(message, error):
                return False  # later messages to this target must wait for this one
            error = None
            self._delivered(sender, pending, message)
        return True

    def _delivered(
        self, sender: ActorId, pending: dict[bytes, Message], message: Message
    ) -> set[bytes]:
        """``message`` was applied: no longer pending; its outbox entry can go (the
        sender's acked keys, returned)."""
        pending.pop(message.key, None)
        acked = self._acked.get(sender)
        if acked is None:
            acked = self._acked[sender] = {message.key}
        else:
            acked.add(message.key)
        return acked

    async def _deliver(self, message: Message, error: Exception | None = None) -> bool:
        """Apply ``message`` at its target; False if it must wait (retried later).

        ``error``: what its last attempt raised (handed straight over), handled
        first as if this delivery's own attempt had raised it.
        """
        transient = 0
        counted = False  # begin_attempt counted the attempt about to run
        while True:
            if error is None:
                if message.recovered and not message.attempted:
                    verdict = await self.attempts.begin(message)
                    if verdict is not None:
                        return verdict
                    counted = True
                try:
                    await self.inboxes.apply(message)
                except Exception as raised:
                    error = raised
                else:
                    self.attempts.forget(message)
                    return True
            exc, error = error, None
            if isinstance(exc, ActorActiveElsewhereError):
                # Another node owns the target: its sweep delivers; done once it applied it.
                return await self.attempts.applied_elsewhere(message)
            if isinstance(exc, RuntimeClosedError):
                return False
            if is_transient(exc):
                transient += 1
                if transient > RETRIES or self.closing:
                    return False
                await asyncio.sleep(backoff(transient))
                continue
            verdict = await self.attempts.failed(message, exc, counted=counted)
            counted = False
            if verdict is None:
                continue
            return verdict

    def _cleanup_later(self, sender: ActorId, acked: set[bytes] | None = None) -> None:
        """Delete ``sender``'s delivered entries in ``CLEANUP_AFTER`` unless a commit does.

        A busy sender's next commit deletes them anyway (``stage``): a commit
        of their own is made only for entries still there after the delay.
        ``acked``: the sender's acked keys, if the caller has them at hand.
        """
        if acked is None:
            acked = self._acked.get(sender)
        if not acked or sender in self._cleanups or self.closing:
            return
        loop = asyncio.get_running_loop()
        self._cleanups[sender] = loop.call_later(
            CLEANUP_AFTER, self._cleanup_due, sender, set(acked)
        )

    def _cleanup_due(self, sender: ActorId, due: set[bytes]) -> None:
        del self._cleanups[sender]
        acked = self._acked.get(sender)
        if not acked or self.closing:
            return
        keys = sorted(due & acked)
        if not keys:  # a commit deleted those; newer ones get their own delay
            self._cleanup_later(sender)
            return
        task = asyncio.get_running_loop().create_task(
            self._cleanup(sender, keys), name=f"kelpie-cleanup-{sender}", context=_clean_context()
        )
        self._cleaning.add(task)
        task.add_done_callback(self._cleaning.discard)

    async def _cleanup(self, sender: ActorId, keys: list[bytes]) -> None:
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
        self._cleanup_later(sender)

    # -- the sweep ----------------------------------------------------------------------

    async def read_outbox(self, sender: ActorId) -> list[Message]:
        """The sender's outbox as stored, read in one transaction.

        Not plain reads: a transaction's first read is confirmed (Redis Cluster
        with ``wait_replicas``: ``WAIT``), so the sweep never delivers a message
        whose sending commit only a master holds -- a failover could still lose
        that commit (and the sender's counter with it) after the target applied
        the message. A store that cannot confirm raises, and the sweep retries.
        """
        async with self.storage.transaction(sender) as txn:
            found = [(key, await txn.get(key)) for key in await txn.list_keys(records.OUTBOX)]
        messages = []
        for key, value in found:
            if value is not None:
                message = Message.unpack(sender, key, value)
                message.recovered = True
                messages.append(message)
        return messages

    async def empty_at(self, sender: ActorId) -> int | None:
        """The sender's commit seq at which its outbox is empty, or ``None`` if it is not."""
        return await self.services.read_consistently(sender, _empty_outbox)

    async def close(self) -> None:
        self.closing = True
        for handle in self._cleanups.values():
            handle.cancel()
        self._cleanups.clear()
        # Delivering what is pending may hand messages over or start pumps: until all landed.
        loop = asyncio.get_running_loop()
        while True:
            running: list[asyncio.Future[Any]] = [*self._pumps.values(), *self._cleaning]
            for pending in self._pending.values():
                for message in pending.values():
                    arrival = message.flight
                    if arrival is not None:
                        if arrival.future is None:
                            arrival.future = loop.create_future()
                        running.append(arrival.future)
            if not running:
                break
            # Not gather: a cancel of close() must not cancel the deliveries too.
            await asyncio.wait(running)
            for future in running:
                if not future.cancelled():
                    future.exception()  # retrieved: each was reported where it happened


async def _empty_outbox(txn: Transaction) -> bool:
    return not await txn.list_keys(records.OUTBOX)
