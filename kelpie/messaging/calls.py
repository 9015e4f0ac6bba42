"""The runtime's own calls on an actor: they run in its mailbox, one transaction each.

A special call is ``(actor, ctx) -> result``, run by ``Activation.invoke``
through the same ``execute`` as a handler: the fence, the state, the commit.
Delivering a message checks and advances the target's high-water mark for
the sender in the transaction that runs the handler, so a message is applied
once however often it is delivered; dead-lettering advances it without
running the handler; firing a reminder checks the reminder's record and
advances or removes it in the transaction that runs the handler.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from kelpie.actor.actor import Actor, handlers_of
from kelpie.actor.context import ActorContext
from kelpie.errors import UnknownOperationError
from kelpie.messaging import records
from kelpie.messaging.records import Message
from kelpie.storage.protocol import Transaction

__all__ = ["GapError", "Special", "cleanup", "dead_letter", "deliver", "handler_of"]

Special = Callable[[Actor[Any], ActorContext[Any]], Awaitable[Any]]


class GapError(Exception):
    """A message arrived before an earlier one from the same sender: deliver that first."""


class Outcome:
    """What a special call did (its result goes to the runtime, not to a user)."""

    __slots__ = ("applied", "result")

    def __init__(self) -> None:
        self.applied = False
        self.result: Any = None


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


async def _high_water(txn: Transaction, message: Message, sender_tag: bytes) -> int | None:
    """The mark if ``message`` is next; ``None`` if it was applied already."""
    mark = records.seq_of(
        await txn.get(records.high_water_key(sender_tag)), f"high-water mark of {message.sender}"
    )
    if message.seq <= mark:
        return None
    if message.seq > mark + 1:
        raise GapError(f"{message!r} arrived after #{mark}: an earlier message is missing")
    return mark


def deliver(message: Message, outcome: Outcome) -> Special:
    """Apply ``message`` at its target unless its high-water mark says it was applied."""
    sender_tag = records.tag(message.sender)

    async def body(actor: Actor[Any], ctx: ActorContext[Any]) -> None:
        txn = txn_of(ctx)
        if await _high_water(txn, message, sender_tag) is None:
            return None
        handler = handler_of(actor, message.operation)
        outcome.result = await handler(ctx, copy.deepcopy(message.payload))
        await txn.set(records.high_water_key(sender_tag), records.seq_bytes(message.seq))
        ctx.wrote = True
        outcome.applied = True
        return None

    return body


def dead_letter(message: Message, error: str, outcome: Outcome) -> Special:
    """Store ``message`` as a dead letter at its target and move the mark past it."""
    sender_tag = records.tag(message.sender)

    async def body(actor: Actor[Any], ctx: ActorContext[Any]) -> None:
        txn = txn_of(ctx)
        if await _high_water(txn, message, sender_tag) is None:
            return None
        await txn.set(
            records.dead_letter_key(sender_tag, message.seq), records.dead_letter(message, error)
        )
        await txn.set(records.high_water_key(sender_tag), records.seq_bytes(message.seq))
        ctx.wrote = True
        outcome.applied = True
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
