"""Many actors and many tasks at once: no write is lost, no actor sees another's."""

from __future__ import annotations

import asyncio

import pytest

from kelpie.errors import TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage.protocol import Storage
from kelpie.testing.conformance._support import bounded
from kelpie.testing.plugin import ActorFactory

__all__ = ["TestConcurrency"]

ACTORS = 50
TASKS_PER_ACTOR = 20


@pytest.mark.asyncio
class TestConcurrency:
    async def test_many_actors_and_tasks_at_once_lose_no_write(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actors = [new_actor(f"crowd-{n}") for n in range(ACTORS)]

        async def work(actor: ActorId, task: int) -> None:
            # A write-only commit of this task's own key...
            async with storage.transaction(actor) as txn:
                await txn.set(b"task-%02d" % task, b"%d" % task)
            # ...and a read-modify-write of the actor's counter, retried on conflict.
            while True:
                try:
                    async with storage.transaction(actor) as txn:
                        current = int(await txn.get(b"count") or b"0")
                        await txn.set(b"count", b"%d" % (current + 1))
                    return
                except TransactionConflictError:
                    await asyncio.sleep(0)

        await bounded(
            asyncio.gather(
                *(work(actor, task) for task in range(TASKS_PER_ACTOR) for actor in actors)
            )
        )
        expected_keys = [b"count"] + [b"task-%02d" % task for task in range(TASKS_PER_ACTOR)]
        for actor in actors:
            assert await storage.list_keys(actor) == expected_keys
            assert await storage.get(actor, b"count") == b"%d" % TASKS_PER_ACTOR
