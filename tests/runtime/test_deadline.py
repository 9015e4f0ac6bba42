"""``within``: the invocation timeout, with asyncio.timeout's cancellation semantics."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kelpie.runtime.deadline import within


async def test_a_result_in_time_comes_back_and_leaves_no_cancellation() -> None:
    async def quick() -> int:
        await asyncio.sleep(0)
        return 7

    assert await within(1.0, quick()) == 7
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_running_past_the_deadline_raises_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        await within(0.01, asyncio.sleep(10))
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # the task is usable afterwards: no pending cancel


async def test_a_cancel_from_outside_passes_through_as_cancelled_error() -> None:
    async def victim() -> None:
        await within(10.0, asyncio.sleep(10))

    task = asyncio.ensure_future(victim())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_outer_cancel_during_expiry_stays_a_cancel() -> None:
    started = asyncio.Event()

    async def victim() -> None:
        async def body() -> None:
            started.set()
            await asyncio.sleep(10)

        await within(0.02, body())

    task = asyncio.ensure_future(victim())
    await started.wait()
    await asyncio.sleep(0.05)  # let the deadline fire, then cancel from outside too
    task.cancel()
    with pytest.raises((asyncio.CancelledError, TimeoutError)):
        await task


async def test_a_body_that_swallows_the_cancel_returns_and_is_uncancelled() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "swallowed"
        return "slept"

    assert await within(0.01, stubborn()) == "swallowed"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_body_that_never_suspends_returns_its_result_without_a_timer() -> None:
    loop = asyncio.get_running_loop()

    async def immediate() -> str:
        return "done"

    scheduled = len(loop._scheduled)  # type: ignore[attr-defined]
    assert await within(0.01, immediate()) == "done"
    assert len(loop._scheduled) == scheduled  # type: ignore[attr-defined]


async def test_an_error_in_the_first_step_reaches_the_caller() -> None:
    async def broken() -> None:
        raise KeyError("first step")

    with pytest.raises(KeyError, match="first step"):
        await within(1.0, broken())


async def test_the_deadline_counts_from_the_start_not_from_the_first_suspension() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def slow_start() -> None:
        while loop.time() - started < 0.05:  # busy for longer than the deadline
            pass
        await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await within(0.02, slow_start())
    assert loop.time() - started < 1.0


async def test_values_and_errors_pass_through_every_suspension() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def body() -> int:
        await asyncio.sleep(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.001)
        return await future + 1

    asyncio.get_running_loop().call_soon(future.set_result, 41)
    assert await within(1.0, body()) == 42
