"""``within``: await a coroutine for at most a given time (loop time), cheaply.

It is ``asyncio.timeout`` reduced to what an invocation needs, because it runs
on every invocation. The coroutine's first step runs at once; most handlers
finish in it (their storage reads and buffered writes do not suspend), and
then no timer is made at all. Only a coroutine that suspends gets a timer,
armed for the deadline counted from the start. The cancellation bookkeeping
is ``asyncio.timeout``'s: the timer cancels the task; on the way out the
cancellation it caused is taken back (``uncancel``) and becomes a
``TimeoutError``, while a cancellation from anyone else passes through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any, Generic, TypeVar, cast

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


def within(seconds: float, awaitable: Awaitable[T]) -> Awaitable[T]:
    """``await awaitable``; raise ``TimeoutError`` if it takes longer than ``seconds``."""
    return _Within(seconds, awaitable.__await__())


class _Within(Generic[T]):
    __slots__ = ("_coro", "_seconds")

    def __init__(self, seconds: float, coro: Generator[Any, Any, T]) -> None:
        self._seconds = seconds
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, T]:
        coro = self._coro
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._seconds
        try:
            signal = coro.send(None)
        except StopIteration as done:
            return cast(T, done.value)  # finished without suspending: no timer needed
        task = asyncio.current_task()
        if task is None:
            coro.close()
            raise RuntimeError("within() must run inside a task")
        cancelling = task.cancelling()
        expiry = _Expiry(task)
        handle = loop.call_at(deadline, expiry)
        try:
            while True:  # what ``yield from coro`` does, after its first step
                try:
                    sent = yield signal
                except GeneratorExit:
                    coro.close()
                    raise
                except BaseException as exc:
                    signal = coro.throw(exc)
                else:
                    signal = coro.send(sent)
        except StopIteration as done:
            return cast(T, done.value)
        except asyncio.CancelledError:
            if expiry.fired:
                expiry.fired = False  # its cancel is taken back here, once
                if task.uncancel() <= cancelling:
                    raise TimeoutError from None
            raise
        finally:
            handle.cancel()
            if expiry.fired:  # expired, but the coroutine finished anyway: take the cancel back
                task.uncancel()
