"""Group commit: commits that arrive while the backend is busy are written together.

One commit per fsync (LMDB) or per round trip (Redis) caps throughput at the
device's or the network's latency. A ``Batcher`` turns concurrent requests
into batches without adding a timer or any wait at low load:

- when the batcher is idle, a request is written at once, by its own caller
  (the *leader*), as a batch of one: concurrency 1 pays no extra hop;
- requests that arrive while a batch is being written queue up; when that
  batch ends, one drain task writes everything queued (up to ``max_batch``)
  as the next batch, and so on until the queue is empty.

The backend supplies ``write(items) -> outcomes``: one outcome per item, in
order, each the value ``submit`` returns to that item's caller (``None`` for a
plain commit) or the exception it raises. A
backend keeps each item's own atomicity and conflict check inside the batch,
so one item's failure never fails another's; an exception raised by ``write``
itself reaches every item of the batch.

If the drain task is cancelled (its process is shutting down or crashed, in
a simulation), the items of the batch in flight get ``in_flight_error()``
(the backend says what is known: nothing applied, or outcome unknown) and the
items still queued get ``StorageUnavailableError`` (never sent) -- also when
it is cancelled before it first runs.

Whose task is the drain? By default it starts in the context of the caller
that led last, so it dies with that caller's "process" in a simulation (the
memory backend gives each simulated process its own storage, whose batches
must die with it). A storage shared by every caller of a process (an LMDB
environment's writer, a Redis connection) passes ``shared=True``: its drain
starts in a fresh ``contextvars.Context`` and belongs to no caller.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from kelpie.errors import StorageUnavailableError

__all__ = ["DEFAULT_MAX_BATCH", "Batcher"]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 128
"""Most commits one batch carries (the ``max_batch`` storage option)."""


class Batcher(Generic[T, R]):
    """Serialises writes into batches: at most one batch in flight at a time."""

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        in_flight_error: Callable[[], BaseException],
        shared: bool = False,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write = write
        self._max_batch = max_batch
        self._in_flight_error = in_flight_error
        self._shared = shared
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0
        """Batches written so far (for benchmarks and tests)."""
        self.items = 0
        """Items written so far; ``items / batches`` is the mean batch size."""
        self.in_flight = 0
        """Items of the batch being written right now (0 when none is)."""

    @property
    def busy(self) -> bool:
        """True while a batch is being written or requests are queued."""
        return self._busy

    async def submit(self, item: T) -> R:
        """Write ``item`` in some batch; return its outcome, or raise it if it is an exception."""
        if not self._busy:
            return await self._lead(item)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        return await future

    async def _lead(self, item: T) -> R:
        """Idle: write ``item`` alone, now, in the caller's task."""
        self._busy = True
        try:
            self.batches += 1
            self.items += 1
            self.in_flight = 1
            (outcome,) = await self._write((item,))
        finally:
            self._busy = False
            self.in_flight = 0
            if self._queue:
                self._start_drain()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _start_drain(self) -> None:
        self._busy = True
        loop = asyncio.get_running_loop()
        context = contextvars.Context() if self._shared else None
        drainer = loop.create_task(self._drain(), context=context)
        self._drainer = drainer
        drainer.add_done_callback(self._drain_ended)

    def _drain_ended(self, drainer: asyncio.Task[None]) -> None:
        """A drain cancelled before it ran never reached its ``finally``: clean up here."""
        if self._drainer is not drainer:
            return  # it ran, and reset everything itself
        self._drainer = None
        self._busy = False
        self.in_flight = 0
        self._fail_queue()

    def _fail_queue(self) -> None:
        queue = self._queue
        while queue:
            _, future = queue.popleft()
            if not future.done():
                future.set_exception(
                    StorageUnavailableError(
                        "the storage stopped before this commit was sent; nothing was written"
                    )
                )

    async def _drain(self) -> None:
        queue = self._queue
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
                batch = [(item, future) for item, future in batch if not future.cancelled()]
                if not batch:
                    continue
                self.batches += 1
                self.items += len(batch)
                self.in_flight = len(batch)
                try:
                    outcomes: Sequence[R | BaseException] = await self._write(
                        [item for item, _ in batch]
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                batch = []
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(self._in_flight_error())
            self._fail_queue()
            raise
        finally:
            self._busy = False
            self._drainer = None
            self.in_flight = 0

    async def wait_idle(self) -> None:
        """Return once nothing is queued or being written (used by ``close``)."""
        while self._busy:
            drainer = self._drainer
            if drainer is not None:
                await asyncio.wait([drainer])
            else:
                await asyncio.sleep(0.001)  # a leader is writing in its own task
