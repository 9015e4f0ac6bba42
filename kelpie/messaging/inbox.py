"""Messages that reach one target together are applied in one transaction there.

A pump hands each message to ``Inboxes.apply``. With nothing on its way to
that target, the message is delivered at once, alone, by its caller; messages
that arrive meanwhile queue, and then one drain task per target takes
everything queued (up to ``MAX_TOGETHER``) and applies it with
``calls.deliver_together``: one
invocation, one commit, for all of them, each message still checked against
and advancing its sender's mark in that commit (exactly once, in order per
sender, ADR 0018). If that invocation fails for any reason (a handler raised,
a conflict, a timeout), each of its messages is delivered again alone
(``calls.deliver``), so every caller gets the outcome a delivery of its message
alone would have had, and one message's failing handler fails only that
message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from kelpie.identity import ActorId
from kelpie.messaging import calls
from kelpie.messaging.records import Message

__all__ = ["MAX_TOGETHER", "Inboxes"]

MAX_TOGETHER = 64
"""Most messages one transaction at a target applies."""

_Waiting = tuple[Message, calls.Outcome, "asyncio.Future[None]"]


class Inboxes:
    """The messages on their way to each target of one runtime, and their drain tasks."""

    def __init__(self, submit: Callable[[ActorId, calls.Special], Awaitable[Any]]) -> None:
        self._submit = submit
        self._queues: dict[ActorId, list[_Waiting]] = {}

    async def apply(self, message: Message, outcome: calls.Outcome) -> None:
        """Apply ``message`` at its target; raise what delivering it alone would raise.

        With nothing on its way to the target, the caller delivers its message
        itself, alone (no extra task at low load); messages arriving meanwhile
        queue, and a drain task applies them together once it is done.
        """
        target = message.target
        queue = self._queues.get(target)
        if queue is not None:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue.append((message, outcome, future))
            await future
            return
        queue = self._queues[target] = []
        try:
            await self._submit(target, calls.deliver(message, outcome))
        finally:
            if queue:
                # In the caller's context (a pump's): it dies with the caller's process.
                asyncio.get_running_loop().create_task(
                    self._drain(target, queue), name=f"kelpie-inbox-{target}"
                )
            elif self._queues.get(target) is queue:
                del self._queues[target]

    async def _drain(self, target: ActorId, queue: list[_Waiting]) -> None:
        try:
            while queue:
                batch = queue[:MAX_TOGETHER]
                del queue[:MAX_TOGETHER]
                try:
                    await self._together(target, batch)
                except BaseException:
                    _cancel(batch)
                    raise
        finally:
            if self._queues.get(target) is queue:
                del self._queues[target]
            _cancel(queue)  # only when cancelled: the queue is empty otherwise

    async def _together(self, target: ActorId, batch: list[_Waiting]) -> None:
        if len(batch) == 1:
            await self._alone(target, batch[0])
            return
        try:
            together = [(message, outcome) for message, outcome, _ in batch]
            await self._submit(target, calls.deliver_together(together))
        except Exception:
            for waiting in batch:
                await self._alone(target, waiting)
            return
        for _, outcome, future in batch:
            if future.done():
                continue
            if outcome.gap is not None:
                future.set_exception(outcome.gap)
            else:
                future.set_result(None)

    async def _alone(self, target: ActorId, waiting: _Waiting) -> None:
        message, outcome, future = waiting
        outcome.applied, outcome.result, outcome.gap = False, None, None
        try:
            await self._submit(target, calls.deliver(message, outcome))
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(None)


def _cancel(waiting: list[_Waiting]) -> None:
    for _, _, future in waiting:
        if not future.done():
            future.cancel()
