"""Reminders: committed with the invocation, fired once per due time, cancelled for good."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import pytest

from kelpie import Runtime, Storage
from kelpie.messaging import records
from kelpie.testing.plugin import Reopen
from tests.messaging.actors import Account, acct, settle
from tests.messaging.conftest import on_backends


def runtime(storage: Storage) -> Runtime:
    rt = Runtime(storage, invocation_timeout=5.0)
    rt.register("acct", Account)
    return rt


async def fired(rt: Runtime, name: str) -> list[float]:
    state: dict[str, Any] = await rt.invoke(acct(name), "state")
    return list(state["fired"])


@on_backends
async def test_a_one_shot_reminder_fires_once_and_is_gone(storage: Storage) -> None:
    async with runtime(storage) as rt:
        loop = asyncio.get_running_loop()
        set_at = loop.time()
        await rt.invoke(acct("r1"), "remind", {"name": "once", "after": 0.2, "payload": 5})

        async def done() -> bool:
            return len(await fired(rt, "r1")) == 1

        await settle(done)
        await asyncio.sleep(1.5)  # nothing more comes
        times = await fired(rt, "r1")
        assert len(times) == 1 and times[0] >= set_at + 0.2
        assert (await rt.invoke(acct("r1"), "state"))["balance"] == 5
        assert await storage.list_keys(acct("r1"), records.REMINDER) == []


@on_backends
async def test_a_repeating_reminder_fires_each_period_until_cancelled(storage: Storage) -> None:
    async with runtime(storage) as rt:
        await rt.invoke(acct("r2"), "remind", {"name": "tick", "after": 0.1, "every": 0.2})

        async def three() -> bool:
            return len(await fired(rt, "r2")) >= 3

        await settle(three)
        await rt.invoke(acct("r2"), "cancel", "tick")
        count = len(await fired(rt, "r2"))
        await asyncio.sleep(1.0)
        times = await fired(rt, "r2")
        assert len(times) == count  # never again once the cancel returned
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= 0.15 for gap in gaps), gaps  # one fire per due time
        assert await storage.list_keys(acct("r2"), records.REMINDER) == []


@on_backends
async def test_a_reminder_set_before_a_restart_fires_without_its_actor_being_invoked(
    storage: Storage, open_storage_again: Reopen
) -> None:
    first = runtime(storage)
    await first.invoke(acct("r3"), "remind", {"name": "later", "after": 0.5, "payload": 1})
    await first.close()  # the process goes away before the reminder is due
    other = await open_storage_again()
    async with runtime(other) as rt:

        async def done() -> bool:
            state = await other.get(acct("r3"), records.reminder_key("later"))
            return state is None

        await settle(done, within=5.0)
        assert len(await fired(rt, "r3")) == 1


@on_backends
async def test_a_reminder_whose_handler_keeps_failing_is_given_up(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "kelpie.messaging")
    async with runtime(storage) as rt:
        await rt.invoke(acct("r4"), "remind", {"name": "bad", "after": 0.05, "payload": "x"})

        def logged() -> bool:
            return any("given up" in r.getMessage() for r in caplog.records)

        async def given_up() -> bool:
            # The warning follows the commit that removed the record: wait for both.
            return await storage.list_keys(acct("r4"), records.REMINDER) == [] and logged()

        await settle(given_up)
        letters = await storage.list_keys(acct("r4"), records.DEAD_LETTER)
        assert len(letters) == 1
        assert logged()
