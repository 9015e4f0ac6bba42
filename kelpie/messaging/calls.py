"""The runtime's own calls on an actor: they run in its mailbox, one transaction each.

A special call is ``(actor, ctx) -> result``, run by ``Activation.invoke``
through the same ``execute`` as a handler: the fence, the state, the commit.
Delivering a message checks and advances the target's high-water mark for
the sender in the transaction that runs the handler, so a message is applied
once however often it is delivered (``deliver_together`` does the same for
several messages in one transaction); counting a failed attempt
(``failed``, ``begin_attempt``) writes the target's ``f`` record and, at
the limit, dead-letters the message, which advances the mark without
running the handler; firing a reminder checks the reminder's record and
advances or removes it in the transaction that runs the handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from kelpie.actor.actor import Actor, handlers_of
from kelpie.actor.context import ActorContext
from kelpie.errors import UnknownOperationError
from kelpie.messaging import records
from kelpie.messaging.records import Message
from kelpie.storage.base import write_buffer
from kelpie.storage.protocol import Transaction

__all__ = [
    "Delivery",
    "GapError",
    "Special",
    "apply_together",
    "begin_attempt",
    "cleanup",
    "dead_letter",
    "deliver",
    "deliver_together",
    "failed",
    "handler_of",
]

Special = Callable[[Actor[Any], ActorContext[Any]], Awaitable[Any]]


class GapError(Exception):
    """A message arrived before an earlier one from the same sender: deliver that first."""


class Outcome:
    """What a special call did (its result goes to the runtime, not to a user).

    ``kelpie.messaging.inbox.Arrival`` sets these slots itself (no ``__init__``
    chain per message): a slot added here goes there too.
    """

    __slots__ = ("applied", "attempts", "dead", "gap", "result")

    def __init__(self) -> None:
        self.applied = False
        self.dead = False
        """Stored as a dead letter by this call."""
        self.attempts = 0
        """Attempts recorded at the target (``begin_attempt``, ``failed``)."""
        self.result: Any = None
        self.gap: GapError | None = None
        """Set by ``deliver_together`` for a message that must wait for an earlier one."""


class Delivery(Outcome):
    """A message to apply at its target, and what applying it did (an ``Outcome``).

    ``kelpie.messaging.inbox.Arrival`` is one: one object per message handed
    over, not two.
    """

    __slots__ = ("message",)

    def __init__(self, message: Message) -> None:
        super().__init__()
        self.message = message


def txn_of(ctx: ActorContext[Any]) -> Transaction:
    """The invocation's transaction, for the runtime's own records (not the ``u`` keys)."""
    return ctx._txn


def handler_of(actor: Actor[Any], operation: str) -> Callable[..., Awaitable[Any]]:
    if operation not in handlers_of(type(actor)):
        raise UnknownOperationError(
            f"{type(actor).__name__} has no handler {operation!r}; handlers: "
            + ", ".join(sorted(handlers_of(type(actor))))
        )
    handler: Callable[..., Awaitable[Any]] = getattr(actor, operation)
    return handler


async def _read_mark(
    ctx: ActorContext[Any], txn: Transaction, message: Message, sender_tag: bytes
) -> int:
    """The target's mark for the sender: as its activation knows it, else as stored.

    The activation's fence read (the state record, first in every transaction)
    proves no commit of the target landed since the activation's own, and every
    mark changes only in a commit of the target: a known mark is the stored one.
    """
    known = _known_mark(ctx, sender_tag)
    if known is not None:
        return known
    raw = await txn.get(records.high_water_key(sender_tag))
    if raw is None:
        mark = 0
    elif len(raw) == 8:
        mark = int.from_bytes(raw, "big")
    else:
        mark = records.seq_of(raw, f"high-water mark of {message.sender}")  # raises
    _note_mark(ctx, sender_tag, mark)
    return mark


def _known_mark(ctx: ActorContext[Any], sender_tag: bytes) -> int | None:
    """The mark as this transaction or its activation knows it (``None``: read it)."""
    new = ctx._new_marks
    if new is not None and sender_tag in new:
        return new[sender_tag]
    known = ctx._marks
    if known is not None and sender_tag in known:
        return known[sender_tag]
    return None


def _note_mark(ctx: ActorContext[Any], sender_tag: bytes, mark: int) -> None:
    if ctx._marks is None:
        return  # not run by an activation: nothing to remember it in
    if ctx._new_marks is None:
        ctx._new_marks = {}
    ctx._new_marks[sender_tag] = mark


async def _set_mark(ctx: ActorContext[Any], txn: Transaction, sender_tag: bytes, seq: int) -> None:
    if not _mark_buffered(ctx, txn, sender_tag, seq):
        await txn.set(records.high_water_key(sender_tag), records.seq_bytes(seq))
        _note_mark(ctx, sender_tag, seq)


def _mark_buffered(ctx: ActorContext[Any], txn: Transaction, sender_tag: bytes, seq: int) -> bool:
    """``_set_mark`` without a coroutine, into one of kelpie's own transactions; False if
    ``txn`` is another kind (or closed): then ``await txn.set`` it."""
    writes = write_buffer(txn)
    if writes is None:
        return False
    writes[records.high_water_key(sender_tag)] = records.seq_bytes(seq)
    _note_mark(ctx, sender_tag, seq)
    return True


async def _high_water(
    ctx: ActorContext[Any], txn: Transaction, message: Message, sender_tag: bytes
) -> int | None:
    """The mark if ``message`` is next; ``None`` if it was applied already."""
    return _next_after(message, await _read_mark(ctx, txn, message, sender_tag))


def _next_after(message: Message, mark: int) -> int | None:
    """``mark`` if ``message`` comes right after it; ``None`` if it was applied already."""
    if message.seq <= mark:
        return None
    if message.seq > mark + 1:
        raise _gap(message, mark)
    return mark


def _gap(message: Message, mark: int) -> GapError:
    return GapError(f"{message!r} arrived after #{mark}: an earlier message is missing")


def deliver(message: Message, outcome: Outcome) -> Special:
    """Apply ``message`` at its target unless its high-water mark says it was applied."""
    sender_tag = message.sender_tag

    async def body(actor: Actor[Any], ctx: ActorContext[Any]) -> None:
        txn = txn_of(ctx)
        if await _high_water(ctx, txn, message, sender_tag) is not None:
            await _apply(actor, ctx, txn, message, outcome, sender_tag)
        return None

    return body


def deliver_together(batch: Sequence[Delivery]) -> Special:
    """Apply several messages to one target in one transaction, each as ``deliver`` would.

    Each message's mark is checked and advanced as in ``deliver``; a message
    that must wait for an earlier one is skipped (its ``outcome.gap`` says
    why) and the others still apply. A handler that raises aborts the whole
    transaction: the caller then delivers the messages one by one.
    """

    async def body(actor: Actor[Any], ctx: ActorContext[Any]) -> None:
        await apply_together(actor, ctx, batch)

    return body


async def apply_together(
    actor: Actor[Any], ctx: ActorContext[Any], batch: Sequence[Delivery]
) -> None:
    """``deliver_together``'s work in a transaction already running (a user's call's).

    The common message -- its mark known to the activation, a handler of that
    name, no attempt recorded, one of kelpie's own transactions -- is applied
    here inline, exactly as ``_read_mark``, ``_next_after`` and ``_apply``
    would apply it: this loop runs for every message.
    """
    txn = ctx._txn
    handlers = handlers_of(type(actor))
    for outcome in batch:
        message = outcome.message
        sender_tag = message.sender_tag
        mark = _known_mark(ctx, sender_tag)  # known: no coroutine to ask the store
        if mark is None:
            mark = await _read_mark(ctx, txn, message, sender_tag)
        seq = message.seq
        if seq <= mark:
            continue  # applied already
        if seq > mark + 1:
            outcome.gap = _gap(message, mark)
            continue
        operation = message.operation
        if message.attempted or operation not in handlers:
            await _apply(actor, ctx, txn, message, outcome, sender_tag)
            continue
        handler: Callable[..., Awaitable[Any]] = getattr(actor, operation)
        outcome.result = await handler(ctx, message.fresh_payload())
        if not _mark_buffered(ctx, txn, sender_tag, seq):
            await _set_mark(ctx, txn, sender_tag, seq)
        ctx.wrote = True
        outcome.applied = True


async def _apply(
    actor: Actor[Any],
    ctx: ActorContext[Any],
    txn: Transaction,
    message: Message,
    outcome: Outcome,
    sender_tag: bytes,
) -> None:
    """Run the message's handler and advance its sender's mark, in the target's transaction
    (its mark already checked)."""
    handler = handler_of(actor, message.operation)
    outcome.result = await handler(ctx, message.fresh_payload())
    await _set_mark(ctx, txn, sender_tag, message.seq)
    if message.attempted:
        await txn.delete(records.failures_key(sender_tag))
    ctx.wrote = True
    outcome.applied = True


async def _store_dead_letter(
    ctx: ActorContext[Any], txn: Transaction, message: Message, sender_tag: bytes, error: str
) -> None:
    await txn.set(
        records.dead_letter_key(sender_tag, message.seq), records.dead_letter(message, error)
    )
    await _set_mark(ctx, txn, sender_tag, message.seq)
    await txn.delete(records.failures_key(sender_tag))


def dead_letter(message: Message, error: str, outcome: Outcome) -> Special:
    """Store ``message`` as a dead letter at its target and move the mark past it."""
    sender_tag = message.sender_tag

    async def body(actor: Actor[Any], ctx: ActorContext[Any]) -> None:
        txn = txn_of(ctx)
        if await _high_water(ctx, txn, message, sender_tag) is None:
            return None
        await _store_dead_letter(ctx, txn, message, sender_tag, error)
        ctx.wrote = True
        outcome.applied = outcome.dead = True
        return None

    return body


def begin_attempt(message: Message, outcome: Outcome, max_attempts: int) -> Special:
    """Count an attempt at ``message`` at its target *before* it runs (its own commit).

    For a message read back from an outbox: its last delivery may have stopped
    the process running it, and that attempt was never counted. If
    ``max_attempts`` are recorded already, the message becomes a dead letter
    instead (``outcome.dead``). Nothing is written for a message already
    applied (``outcome.applied``); a gap raises ``GapError``.
    """
    sender_tag = message.sender_tag

    async def body(actor: Actor[Any], ctx: ActorContext[Any]) -> None:
        txn = txn_of(ctx)
        if await _high_water(ctx, txn, message, sender_tag) is None:
            outcome.applied = True
            return None
        key = records.failures_key(sender_tag)
        attempts, error = records.unpack_failures(
            await txn.get(key), message.seq, f"failures of {message.sender} at {ctx.actor_id}"
        )
        if attempts >= max_attempts:
            await _store_dead_letter(
                ctx, txn, message, sender_tag, error or "its deliveries were cut short"
            )
            outcome.applied = outcome.dead = True
        else:
            attempts += 1
            await txn.set(key, records.pack_failures(message.seq, attempts, error))
        outcome.attempts = attempts
        ctx.wrote = True
        return None

    return body


def failed(
    message: Message, error: str, outcome: Outcome, max_attempts: int, *, counted: bool
) -> Special:
    """Record at the target that ``message``'s handler failed; dead-letter it at the limit.

    ``counted``: ``begin_attempt`` counted this attempt already (only the error
    is recorded). At ``max_attempts`` the message is stored as a dead letter
    and the mark moves past it (``outcome.dead``).
    """
    sender_tag = message.sender_tag

    async def body(actor: Actor[Any], ctx: ActorContext[Any]) -> None:
        txn = txn_of(ctx)
        if await _high_water(ctx, txn, message, sender_tag) is None:
            outcome.applied = True  # applied meanwhile (another node, an earlier try)
            return None
        key = records.failures_key(sender_tag)
        attempts, _ = records.unpack_failures(
            await txn.get(key), message.seq, f"failures of {message.sender} at {ctx.actor_id}"
        )
        if not counted:
            attempts += 1
        if attempts >= max_attempts:
            await _store_dead_letter(ctx, txn, message, sender_tag, error)
            outcome.applied = outcome.dead = True
        else:
            await txn.set(key, records.pack_failures(message.seq, attempts, error))
        outcome.attempts = attempts
        ctx.wrote = True
        return None

    return body


def cleanup(keys: list[bytes], done: Callable[[], None]) -> Special:
    """Delete delivered outbox entries of the sender (``done`` runs before the commit)."""

    async def body(actor: Actor[Any], ctx: ActorContext[Any]) -> None:
        txn = txn_of(ctx)
        for key in keys:
            await txn.delete(key)
        ctx.wrote = True
        done()
        return None

    return body
