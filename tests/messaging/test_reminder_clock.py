"""Reminder time is shared by hosts: the loop's clock anchored once to the wall clock.

Two "hosts" are two event loops whose clocks start far apart, as two machines'
monotonic clocks do (one up for 30 days, one just booted), run one after the
other on one LMDB store. On the loop's clock alone, a reminder set on the first
host would be due 30 days into the second host's future.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kelpie.dst.loop import SimulationLoop
from kelpie.errors import ConfigError
from kelpie.messaging.clock import WallAnchoredClock, loop_time
from kelpie.runtime import Runtime
from kelpie.storage import open_storage

from .actors import Account, acct, settle

T = TypeVar("T")

THIRTY_DAYS = 30 * 86_400.0


class _ShiftedLoop(asyncio.SelectorEventLoop):
    """A loop whose clock reads ``shift`` seconds more than this host's monotonic clock."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def time(self) -> float:
        return super().time() + self.shift


def _on_host(shift: float, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=lambda: _ShiftedLoop(shift)) as runner:
        return runner.run(main())


def test_a_reminder_set_on_a_host_up_for_30_days_fires_on_time_on_a_fresh_one(
    tmp_path: Path,
) -> None:
    url = f"lmdb://{tmp_path / 'store'}"

    async def set_it() -> None:
        async with open_storage(url) as storage, Runtime(storage) as rt:
            rt.register("acct", Account)
            await rt.invoke(acct("r"), "remind", {"name": "once", "after": 0.5, "payload": 7})

    async def wait_for_it() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with open_storage(url) as storage, Runtime(storage) as rt:
            rt.register("acct", Account)

            async def fired() -> bool:
                state = await rt.invoke(acct("r"), "state")
                return bool(state["balance"] == 7)

            await settle(fired, within=10.0)
        return loop.time() - started

    _on_host(THIRTY_DAYS, set_it)
    waited = _on_host(0.0, wait_for_it)
    print(f"fired {waited:.2f} s after the fresh host's runtime started")
    assert waited < 10.0


def test_the_anchor_is_read_once_and_the_loop_moves_the_clock() -> None:
    walls: list[float] = []

    def wall() -> float:
        walls.append(1_800_000_000.0)
        return walls[-1]

    async def readings(clock: Callable[[], float]) -> tuple[float, float]:
        first = clock()
        await asyncio.sleep(2.5)
        return first, clock()

    loop = SimulationLoop()
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        first, later = runner.run(readings(WallAnchoredClock(wall)))
        assert (first, later) == (1_800_000_000.0, 1_800_000_002.5)  # virtual seconds
        assert len(walls) == 1
        assert runner.run(readings(loop_time)) == (2.5, 5.0)  # no anchor: the loop's own


def test_two_hosts_whose_loop_clocks_differ_agree_on_reminder_time() -> None:
    def wall() -> float:
        return 1_800_000_000.0

    async def read() -> float:
        return WallAnchoredClock(wall)()

    assert _on_host(THIRTY_DAYS, read) == _on_host(0.0, read) == 1_800_000_000.0


def test_a_runtime_keeps_reminder_time_in_the_wall_clocks_epoch_by_default(
    tmp_path: Path,
) -> None:
    async def main() -> float:
        async with open_storage(f"lmdb://{tmp_path / 'store'}") as storage, Runtime(storage) as rt:
            return rt._messaging.clock()

    before = time.time()
    reading = _on_host(THIRTY_DAYS, main)
    assert before - 1.0 <= reading <= time.time() + 1.0


def test_a_reminder_clock_that_is_not_callable_is_a_config_error(tmp_path: Path) -> None:
    storage = open_storage(f"lmdb://{tmp_path / 'store'}")
    with pytest.raises(ConfigError, match="reminder_clock must be callable, got float"):
        Runtime(storage, reminder_clock=1.5)  # type: ignore[arg-type]
