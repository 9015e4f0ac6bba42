"""The virtual clock: time jumps to the next timer; equal deadlines run in order."""

from __future__ import annotations

import asyncio
import time

import pytest

from kelpie.dst.loop import (
    SimulationDeadlockError,
    SimulationError,
    SimulationLoop,
    SimulationTimeLimitError,
    run_simulation,
)


def test_an_hour_long_sleep_advances_virtual_time_only() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, SimulationLoop)
        before = loop.time()
        await asyncio.sleep(3600)
        return before, loop.time()

    wall = time.monotonic()
    before, after = run_simulation(main)
    elapsed = time.monotonic() - wall
    print(f"virtual {after - before} s in {elapsed:.4f} s of wall time")
    assert after - before == 3600.0


def test_timers_with_equal_deadlines_run_in_scheduling_order() -> None:
    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        order: list[object] = []
        for i in range(50):
            loop.call_at(10.0, order.append, i)
        loop.call_at(5.0, order.append, "early")

        async def sleeper(name: str) -> None:
            await asyncio.sleep(20)
            order.append(name)

        await asyncio.gather(*(sleeper(f"task{i}") for i in range(5)))
        return order

    assert run_simulation(main) == ["early", *range(50), *(f"task{i}" for i in range(5))]


def test_cancelled_timers_do_not_run_and_do_not_stop_the_clock() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        ran: list[int] = []
        handles = [loop.call_later(i, ran.append, i) for i in range(1, 200)]
        for handle in handles[::2]:
            handle.cancel()
        await asyncio.sleep(500)
        return ran

    assert run_simulation(main) == list(range(2, 200, 2))


def test_timeouts_use_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.sleep(3600)
        return loop.time()

    assert run_simulation(main) == 30.0


def test_a_deadlock_raises_instead_of_hanging() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimulationDeadlockError):
        run_simulation(main)


def test_passing_max_time_raises() -> None:
    async def main() -> None:
        for _ in range(1000):  # 1000 minutes > max_time
            await asyncio.sleep(60)

    with pytest.raises(SimulationTimeLimitError):
        run_simulation(main, max_time=3600)


def test_threads_are_refused() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0)

    with pytest.raises(SimulationError):
        run_simulation(main)


def test_one_program_gives_one_schedule() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        log: list[tuple[str, float]] = []

        async def worker(name: str, delays: list[float]) -> None:
            for delay in delays:
                await asyncio.sleep(delay)
                log.append((name, loop.time()))

        await asyncio.gather(
            worker("a", [0.5, 0.25, 1.0]), worker("b", [0.25, 0.5, 0.0]), worker("c", [0.75] * 3)
        )
        return log

    assert run_simulation(main) == run_simulation(main)
