"""``within``: await something for at most a given time (loop time), cheaply.

It is ``asyncio.timeout`` reduced to what an invocation needs -- one timer
handle and no context-manager object -- because it runs on every invocation
(``asyncio.timeout`` costs about three times as much). The cancellation
bookkeeping is the same: the timer cancels the task; on the way out the
cancellation it caused is taken back (``uncancel``) and becomes a
``TimeoutError``, while a cancellation from anyone else passes through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["within"]

T = TypeVar("T")


class _Expiry:
    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``await awaitable``; raise ``TimeoutError`` if it takes longer than ``seconds``."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("within() must run inside a task")
    cancelling = task.cancelling()
    expiry = _Expiry(task)
    handle = asyncio.get_running_loop().call_later(seconds, expiry)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if expiry.fired:
            expiry.fired = False  # its cancel is taken back here, once
            if task.uncancel() <= cancelling:
                raise TimeoutError from None
        raise
    finally:
        handle.cancel()
        if expiry.fired:  # expired, but the awaitable finished anyway: take the cancel back
            task.uncancel()
