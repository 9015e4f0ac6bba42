"""Mailboxes: one invocation at a time per actor, in order; actors concurrent."""

from __future__ import annotations

import asyncio

import pytest

from kelpie import ActorId, MailboxFullError, Runtime, Storage
from tests.runtime.conftest import register_all


async def test_invocations_of_one_actor_run_one_at_a_time_in_arrival_order(
    runtime: Runtime,
) -> None:
    actor = ActorId("account", "fifo")
    calls = [asyncio.create_task(runtime.invoke(actor, "record", n)) for n in range(50)]
    results = await asyncio.gather(*calls)
    # Each call saw exactly the calls before it: strictly sequential, FIFO.
    for n, seen in enumerate(results):
        assert seen == list(range(n + 1))


async def test_different_actors_run_concurrently(runtime: Runtime) -> None:
    waiter = ActorId("account", "waiter")
    releaser = ActorId("account", "releaser")
    blocked = asyncio.create_task(runtime.invoke(waiter, "wait_for"))
    await asyncio.sleep(0)
    # waiter's handler is blocked; releaser must still run to unblock it.
    await asyncio.wait_for(runtime.invoke(releaser, "release", "waiter"), 5)
    assert await asyncio.wait_for(blocked, 5) == "released"


async def test_full_mailbox_raises_a_named_error(storage: Storage) -> None:
    runtime = register_all(Runtime(storage, mailbox_size=2))
    actor = ActorId("account", "busy")
    try:
        blocked = asyncio.create_task(runtime.invoke(actor, "wait_for"))
        await asyncio.sleep(0.01)  # the worker takes the first call off the queue
        queued = [asyncio.create_task(runtime.invoke(actor, "balance")) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(MailboxFullError):
            await runtime.invoke(actor, "balance")
        await runtime.invoke(ActorId("account", "other"), "release", "busy")
        assert await blocked == "released"
        assert await asyncio.gather(*queued) == [0, 0]
    finally:
        await runtime.close()


async def test_many_actors_and_tasks_lose_no_invocation(runtime: Runtime) -> None:
    actors = [ActorId("account", f"many-{n}") for n in range(20)]

    async def client(actor: ActorId) -> None:
        for _ in range(10):
            await runtime.invoke(actor, "deposit", {"amount": 1})

    await asyncio.gather(*(client(a) for a in actors for _ in range(3)))
    balances = await asyncio.gather(*(runtime.invoke(a, "balance") for a in actors))
    assert balances == [30] * len(actors)
