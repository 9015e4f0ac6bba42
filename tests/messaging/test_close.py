"""Closing a runtime stops the messaging sweep at once, even if a client ate the cancel."""

from __future__ import annotations

import asyncio
import contextlib

from kelpie import ActorId, Runtime, Storage
from kelpie.storage.memory import MemoryStorage
from kelpie.storage.wrapper import StorageWrapper
from tests.messaging.actors import Account


class CancelEatingStorage(StorageWrapper):
    """``list_actors`` waits and, when cancelled, returns as if it had finished.

    Some storage clients do this with a cancel that lands in the middle of a
    call (fakeredis did, making every runtime close wait out a 5 s poll).
    """

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.entered = asyncio.Event()

    async def list_actors(
        self, namespace: str | None = None, *, after: ActorId | None = None, limit: int = 1000
    ) -> list[ActorId]:
        self.entered.set()
        with contextlib.suppress(asyncio.CancelledError):  # the bug being imitated
            await asyncio.sleep(3600)
        return []


async def test_close_does_not_wait_out_the_sweeps_poll_when_a_client_eats_its_cancel() -> None:
    storage = CancelEatingStorage(MemoryStorage())
    rt = Runtime(storage)
    rt.register("acct", Account)
    await rt.invoke(ActorId("acct", "a"), "deposit", 1)  # starts the sweep
    await asyncio.wait_for(storage.entered.wait(), 10)
    # The sweep's idle poll is 5 s of loop time; close must not wait for it.
    closing = asyncio.create_task(rt.close())
    done, _ = await asyncio.wait({closing}, timeout=2.5)
    assert closing in done, "close() waited for the sweep's next poll"
    await closing
    assert rt._messaging._task is not None and rt._messaging._task.done()
