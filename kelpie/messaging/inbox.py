"""Messages wait in their target's mailbox and ride its next commit (ADR 0020).

A pump hands each message to ``Inboxes.apply``, which puts it in the
target's mailbox (``Mailbox.arrive``) and waits for its outcome. The mailbox
worker applies what has arrived in the next transaction it runs anyway:

- before a user's invocation, in that invocation's transaction
  (``invoke_with``): the messages first, each checked against and advancing
  its own sender's mark as ``calls.deliver`` would, then the handler; one
  commit for all of it;
- once the mailbox's queue has run empty (the actor had nothing else to
  do): all of them in one transaction (``deliver_arrived``).

At most ``MAX_TOGETHER`` messages go in one transaction. Whatever goes wrong
in a transaction that carried messages, each message is delivered again
alone (``deliver_alone``) before the worker moves on, so one message's failing
handler fails only that message and a user's call never fails because of a
message: if a message got in the way before the user's handler started, the
call then runs alone as if nothing had arrived.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kelpie.actor.context import ActorContext
from kelpie.identity import ActorId
from kelpie.messaging import calls
from kelpie.messaging.records import Message

if TYPE_CHECKING:
    from kelpie.runtime.activation import Activation
    from kelpie.runtime.idempotency import Idempotency

__all__ = [
    "MAX_TOGETHER",
    "Arrival",
    "CombinedFailed",
    "Inboxes",
    "Requeue",
    "deliver_alone",
    "deliver_arrived",
    "give_back",
    "invoke_with",
    "take",
]

MAX_TOGETHER = 64
"""Most messages one transaction at a target applies."""


class Requeue(Exception):
    """The target's mailbox closed before the message ran: deliver it again (transient)."""


class Arrival(calls.Delivery):
    """A message waiting in its target's mailbox, its outcome, and how its deliverer hears it.

    The deliverer either awaits ``future`` (a pump) or is called back by
    ``then`` with the arrival and its error (``None``: applied), synchronously,
    from the target's worker right after the transaction that carried it
    (a message handed straight over, ``Messenger``).
    """

    __slots__ = ("finished", "future", "then")

    def __init__(
        self,
        message: Message,
        future: asyncio.Future[None] | None = None,
        then: Callable[[Arrival, Exception | None], None] | None = None,
    ) -> None:
        # Every slot set here (no chain of __init__ calls: one Arrival per message).
        self.message = message
        self.applied = False
        self.dead = False
        self.attempts = 0
        self.result: Any = None
        self.gap: calls.GapError | None = None
        self.future = future
        self.then = then
        self.finished = False

    @property
    def waiting(self) -> bool:
        """Its deliverer still waits for it (a pump may have given up)."""
        return not self.finished and (self.future is None or not self.future.done())

    def settle(self) -> None:
        """The transaction that carried it committed: report its outcome."""
        self._finish(self.gap)

    def fail(self, exc: Exception) -> None:
        self._finish(exc)

    def _finish(self, exc: Exception | None) -> None:
        if self.finished:
            return
        self.finished = True
        future = self.future
        if future is not None and not future.done():
            if exc is None:
                future.set_result(None)
            else:
                future.set_exception(exc)
        if self.then is not None:
            self.then(self, exc)


def take(arrived: list[Arrival]) -> list[Arrival]:
    """Up to ``MAX_TOGETHER`` arrivals whose deliverer still waits, removed from ``arrived``."""
    if len(arrived) == 1:  # the common case
        arrival = arrived.pop()
        return [arrival] if arrival.waiting else []
    batch = [arrival for arrival in arrived[:MAX_TOGETHER] if arrival.waiting]
    del arrived[:MAX_TOGETHER]
    return batch


def give_back(arrivals: list[Arrival], target: ActorId) -> None:
    """The target's worker stopped before these ran: their deliverers try again."""
    closed = Requeue(f"the mailbox of {target} closed before the message ran")
    for arrival in arrivals:
        arrival.fail(closed)


class Inboxes:
    """Hands messages to their targets' mailboxes and waits for each one's outcome."""

    def __init__(self, arrive: Callable[[ActorId, Arrival], None]) -> None:
        self._arrive = arrive

    async def apply(self, message: Message) -> None:
        """Apply ``message`` at its target; raise what delivering it alone would raise."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._arrive(message.target, Arrival(message, future))
        await future

    def hand_over(
        self, message: Message, then: Callable[[Arrival, Exception | None], None]
    ) -> Arrival:
        """Put ``message`` in its target's mailbox; ``then`` hears how it went (see ``Arrival``).

        Raises at once what putting it there raises (no such actor type, a full mailbox).
        """
        arrival = Arrival(message, None, then)
        self._arrive(message.target, arrival)
        return arrival


async def deliver_alone(activation: Activation, batch: list[Arrival]) -> None:
    """Deliver each message in its own transaction, in order; report each outcome."""
    for arrival in batch:
        if not arrival.waiting:
            continue
        arrival.applied, arrival.result, arrival.gap = False, None, None
        try:
            if not activation.loaded:
                await activation.load()
            await activation.invoke("", None, None, calls.deliver(arrival.message, arrival))
        except Exception as exc:
            arrival.fail(exc)
        else:
            arrival.settle()


async def deliver_arrived(activation: Activation, batch: list[Arrival]) -> None:
    """The actor is otherwise idle: apply ``batch`` in one transaction (alone on failure)."""
    if len(batch) == 1:
        await deliver_alone(activation, batch)
        return
    try:
        if not activation.loaded:
            await activation.load()
        await activation.invoke("", None, None, calls.deliver_together(batch))
    except Exception:
        await deliver_alone(activation, batch)
        return
    for arrival in batch:
        arrival.settle()


class CombinedFailed(Exception):
    """A call that carried messages failed with ``error``; nothing of it was stored.

    ``handler_started``: the user's handler had begun (every message before it
    applied in memory), so ``error`` is the call's own outcome; otherwise a
    message got in the way (or the transaction failed before any of it ran).
    """

    def __init__(self, error: Exception, handler_started: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.handler_started = handler_started


async def invoke_with(
    activation: Activation,
    batch: list[Arrival],
    operation: str,
    payload: Any,
    idempotency: Idempotency | None,
) -> Any:
    """Run a user's call with ``batch`` applied first, in its transaction; return its result.

    The activation is loaded. On success the arrivals are settled; where the
    body never ran (an idempotent replay) they are delivered alone. Any
    failure raises ``CombinedFailed`` and leaves the arrivals to the caller.
    """
    actor = activation.actor
    handler: Callable[..., Awaitable[Any]] = getattr(actor, operation)
    started = False

    async def body(ctx: ActorContext[Any]) -> Any:
        nonlocal started
        await calls.apply_together(actor, ctx, batch)  # each as calls.deliver would
        started = True
        return await handler(ctx, payload)

    try:
        result = await activation.execute(body, idempotency)
    except Exception as exc:
        raise CombinedFailed(exc, started) from exc
    if started:
        for arrival in batch:
            arrival.settle()
    else:  # answered from its idempotency record: the body, messages included, never ran
        await deliver_alone(activation, batch)
    return result
