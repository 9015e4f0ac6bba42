"""Reminder time: seconds since the Unix epoch, advanced by the event loop.

A reminder's due time is stored, and compared by every runtime on the store:
on other hosts, and after a reboot. The event loop's clock alone cannot be
shared that way (on the default loop it is the host's monotonic clock, which
starts again at every boot and differs between hosts), so a runtime anchors
it to the wall clock: ``WallAnchoredClock`` reads the wall clock once, the
first time the runtime asks for the time, and from then on adds the loop's
elapsed time. Time still comes from the event loop (a simulated loop drives
reminders in virtual time, and a step of the wall clock does not move a
running runtime's due times); runtimes whose hosts keep their clocks in step
(NTP) agree on due times to within that skew.

``loop_time`` is the event loop's clock with no anchor: the simulator runs on
it, so a seed replays exactly (``Runtime(reminder_clock=loop_time)``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["ReminderClock", "WallAnchoredClock", "loop_time"]

ReminderClock = Callable[[], float]
"""Seconds, as reminders' due times are stored; called inside the runtime's event loop."""


class WallAnchoredClock:
    """The event loop's clock, shifted once so that it reads seconds since the epoch."""

    __slots__ = ("_offset", "_wall")

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._offset: float | None = None

    def __call__(self) -> float:
        now = asyncio.get_running_loop().time()
        if self._offset is None:
            self._offset = self._wall() - now
        return now + self._offset


def loop_time() -> float:
    """The running event loop's clock (virtual time in a simulation)."""
    return asyncio.get_running_loop().time()
