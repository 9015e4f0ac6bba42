"""A deterministic asyncio event loop with virtual time.

``SimulationLoop`` runs ordinary asyncio code (tasks, ``asyncio.sleep``,
``asyncio.timeout``, queues, locks) in a single thread with no real I/O. Its
``time()`` is a virtual clock: when no callback is ready, the clock jumps
straight to the next timer instead of sleeping, so ``asyncio.sleep(3600)``
returns at once with ``loop.time()`` 3600 seconds later. Ready callbacks run
in FIFO order (as asyncio promises) and timers due at the same instant run in
the order they were scheduled, so one program and one seed always give one
schedule. When every task is blocked and no timer is pending the simulation
has deadlocked and ``SimulationDeadlockError`` is raised, instead of hanging.

This is the trio ``MockClock`` idea (autojump) applied to asyncio's
``BaseEventLoop``: the selector is replaced by one that never waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
from collections.abc import Awaitable, Callable
from contextvars import Context
from typing import Any, TypeVar

__all__ = [
    "SimulationDeadlockError",
    "SimulationError",
    "SimulationLoop",
    "SimulationTimeLimitError",
    "run_simulation",
]

T = TypeVar("T")


class SimulationError(Exception):
    """The simulation itself went wrong (not the code under test)."""


class SimulationDeadlockError(SimulationError):
    """Every task is blocked and no timer is pending: nothing can ever run again."""


class SimulationTimeLimitError(SimulationError):
    """Virtual time passed the simulation's ``max_time`` (a livelock, or a run too long)."""


class _SequencedTimerHandle(asyncio.TimerHandle):
    """A timer ordered by (deadline, scheduling sequence): ties run first-scheduled first."""

    __slots__ = ("_seq",)

    def __init__(
        self,
        when: float,
        seq: int,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: Context | None,
    ) -> None:
        super().__init__(when, callback, args, loop, context)
        self._seq = seq

    # heapq only needs ``<``; it is on the hot path, so no tuples.
    def __lt__(self, other: object) -> bool:
        if isinstance(other, _SequencedTimerHandle):
            mine, theirs = self._when, other._when  # type: ignore[attr-defined]
            return bool(mine < theirs or (mine == theirs and self._seq < other._seq))
        return NotImplemented

    def __le__(self, other: object) -> bool:
        if isinstance(other, _SequencedTimerHandle):
            return self == other or self < other
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if isinstance(other, _SequencedTimerHandle):
            return other < self
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        if isinstance(other, _SequencedTimerHandle):
            return self == other or other < self
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.when(), self._seq))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _SequencedTimerHandle):
            return (
                self.when() == other.when()
                and self._seq == other._seq
                and self.cancelled() == other.cancelled()
            )
        return NotImplemented


class _VirtualSelector:
    """Stands in for the I/O selector: never waits, advances the virtual clock instead."""

    def __init__(self, loop: SimulationLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        loop = self._loop
        if timeout is None:
            raise SimulationDeadlockError(
                f"deadlock at virtual time {loop.time():.6f}: every task is blocked "
                "and no timer is pending"
            )
        if timeout > 0:
            # Jump exactly to the earliest deadline (not now + timeout, which
            # can round to just before it).
            when: float = loop._scheduled[0]._when  # type: ignore[attr-defined]
            if loop.max_time is not None and when > loop.max_time:
                raise SimulationTimeLimitError(
                    f"virtual time would pass max_time={loop.max_time} (next timer at {when})"
                )
            loop._now = max(loop._now, when)
            loop.jumps += 1
        return []

    def close(self) -> None:
        pass


class SimulationLoop(asyncio.BaseEventLoop):
    """An event loop whose clock is virtual and whose schedule is deterministic.

    ``max_time`` bounds virtual time (``SimulationTimeLimitError`` past it).
    Threads (``run_in_executor``) and real I/O are refused: they would make the
    schedule depend on the machine.
    """

    def __init__(self, *, start_time: float = 0.0, max_time: float | None = None) -> None:
        super().__init__()
        self._now = float(start_time)
        self.max_time = max_time
        self.jumps = 0
        self._timer_seq = 0
        self._selector = _VirtualSelector(self)
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._now

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()  # type: ignore[attr-defined]
        self._timer_seq += 1
        timer = _SequencedTimerHandle(when, self._timer_seq, callback, args, self, context)
        heapq.heappush(self._scheduled, timer)  # type: ignore[attr-defined]
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        # call_soon_threadsafe: there are no other threads in a simulation and
        # the loop never blocks, so there is nothing to wake.
        pass

    def run_in_executor(  # type: ignore[override]
        self, executor: concurrent.futures.Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        raise SimulationError(
            "threads are not allowed in a simulation: their timing is not deterministic "
            "(run real-I/O backends such as LMDB with a real event loop instead)"
        )

    def close(self) -> None:
        super().close()
        self._selector.close()


def run_simulation(
    main: Callable[[], Awaitable[T]],
    *,
    max_time: float | None = None,
    start_time: float = 0.0,
) -> T:
    """Run ``main()`` to completion on a fresh ``SimulationLoop`` and return its result.

    Like ``asyncio.run``: remaining tasks are cancelled and async generators
    closed before the loop is closed.
    """

    async def _main() -> T:
        return await main()

    with asyncio.Runner(
        loop_factory=lambda: SimulationLoop(start_time=start_time, max_time=max_time)
    ) as runner:
        return runner.run(_main())
