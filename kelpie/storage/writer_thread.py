"""``WriterThread``: one thread that runs blocking jobs in order for an asyncio caller.

The embedded backends (LMDB, SQLite) write on one thread of their own: a
write transaction belongs to the thread that began it, and one writer keeps
commits in submission order. Lighter than ``run_in_executor`` on a
``ThreadPoolExecutor`` (one queue, one ``call_soon_threadsafe`` per job).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

__all__ = ["WriterThread"]

T = TypeVar("T")

_Job: TypeAlias = "tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], object]]"


def _deliver(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class WriterThread:
    """Runs jobs in submission order on one thread; answers on the caller's loop.

    A daemon, so an unclosed storage never blocks interpreter exit (neither
    LMDB nor SQLite ever applies half a transaction).
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, call))
        return future

    def stop(self) -> None:
        """The thread ends after the jobs already submitted."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, call = job
            result: object = None
            error: BaseException | None = None
            try:
                result = call()
            except BaseException as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the caller's loop closed meanwhile
                loop.call_soon_threadsafe(_deliver, future, result, error)
            del job, loop, future, call, result, error
