"""Closing a runtime stops the messaging sweep at once, even if a client ate the cancel."""

from __future__ import annotations

import asyncio

from kelpie import ActorId, Runtime, Storage
from kelpie.storage.memory import MemoryStorage
from kelpie.storage.wrapper import StorageWrapper
from tests.messaging.actors import Account


class SweepBlockingStorage(StorageWrapper):
    """``list_actors`` (the sweep's first call) blocks until cancelled; ``entered`` once it has.

    What it does with the cancel is the subclass's ``_cancelled``.
    """

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.entered = asyncio.Event()

    async def list_actors(
        self, namespace: str | None = None, *, after: ActorId | None = None, limit: int = 1000
    ) -> list[ActorId]:
        self.entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await self._cancelled()
        return []

    async def _cancelled(self) -> None:
        raise NotImplementedError


class CancelEatingStorage(SweepBlockingStorage):
    """Cancelled, ``list_actors`` returns as if it had finished.

    Some storage clients do this with a cancel that lands in the middle of a
    call (fakeredis did, making every runtime close wait out a 5 s poll).
    """

    async def _cancelled(self) -> None:
        return None  # the bug being imitated


async def _sweeping(storage: SweepBlockingStorage) -> Runtime:
    """A runtime whose sweep is blocked in ``storage.list_actors``."""
    rt = Runtime(storage)
    rt.register("acct", Account)
    await rt.invoke(ActorId("acct", "a"), "deposit", 1)  # starts the sweep
    await asyncio.wait_for(storage.entered.wait(), 10)
    return rt


async def test_close_does_not_wait_out_the_sweeps_poll_when_a_client_eats_its_cancel() -> None:
    rt = await _sweeping(CancelEatingStorage(MemoryStorage()))
    # The sweep's idle poll is 5 s of loop time; close must not wait for it.
    closing = asyncio.create_task(rt.close())
    done, _ = await asyncio.wait({closing}, timeout=2.5)
    assert closing in done, "close() waited for the sweep's next poll"
    await closing
    assert rt._messaging._task is not None and rt._messaging._task.done()


class SlowToStopStorage(SweepBlockingStorage):
    """Cancelled, ``list_actors`` takes a while to clean up, then stops."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.stopped = asyncio.Event()

    async def _cancelled(self) -> None:
        await asyncio.sleep(0.5)  # a slow cleanup
        self.stopped.set()
        raise asyncio.CancelledError


async def test_a_cancelled_close_raises_and_a_later_close_finishes() -> None:
    storage = SlowToStopStorage(MemoryStorage())
    rt = await _sweeping(storage)
    closing = asyncio.create_task(rt.close())
    await asyncio.sleep(0.05)  # close() waits for the sweep to stop
    closing.cancel()
    # The cancel of close() itself reaches its caller (it was swallowed once,
    # with the sweep's own CancelledError), without waiting for the sweep.
    done, _ = await asyncio.wait({closing}, timeout=0.3)
    assert closing in done and closing.cancelled()
    assert not storage.stopped.is_set()
    await rt.close()  # finishes the job
    assert storage.stopped.is_set()
    assert rt._messaging._task is not None and rt._messaging._task.done()
