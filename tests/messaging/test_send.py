"""ctx.send: the outbox commits with the invocation; each message is applied once, in order."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kelpie import Runtime, Storage
from kelpie.messaging import delivery, records
from kelpie.messaging.records import Message
from kelpie.testing.plugin import Reopen
from tests.messaging.actors import Account, acct, settle
from tests.messaging.conftest import on_backends


def runtime(storage: Storage) -> Runtime:
    rt = Runtime(storage, invocation_timeout=5.0)
    rt.register("acct", Account)
    return rt


async def balance(rt: Runtime, name: str) -> Any:
    return (await rt.invoke(acct(name), "state"))["balance"]


async def outbox(storage: Storage, name: str) -> list[bytes]:
    return await storage.list_keys(acct(name), records.OUTBOX)


@on_backends
async def test_transfer_moves_money_once_and_cleans_the_outbox(storage: Storage) -> None:
    async with runtime(storage) as rt:
        await rt.invoke(acct("a"), "deposit", 100)
        assert await rt.invoke(acct("a"), "transfer", {"to": "b", "amount": 30, "note": "t1"}) == 70

        async def arrived() -> bool:
            return bool(await balance(rt, "b") == 30 and not await outbox(storage, "a"))

        await settle(arrived)
        assert await balance(rt, "a") == 70
        state = await rt.invoke(acct("b"), "state")
        assert state["log"] == ["t1"]


@on_backends
async def test_messages_apply_in_send_order_per_target_and_to_oneself(storage: Storage) -> None:
    async with runtime(storage) as rt:
        for batch in range(4):
            await rt.invoke(acct("s"), "many", {"to": "t", "count": 10, "tag": f"b{batch}."})
            await rt.invoke(acct("s"), "many", {"to": "s", "count": 3, "tag": f"self{batch}."})

        async def arrived() -> bool:
            t = await rt.invoke(acct("t"), "state")
            s = await rt.invoke(acct("s"), "state")
            return len(t["log"]) == 40 and len(s["log"]) == 12

        await settle(arrived)
        t_log = (await rt.invoke(acct("t"), "state"))["log"]
        assert t_log == [f"b{b}.{n}" for b in range(4) for n in range(10)]
        s_log = (await rt.invoke(acct("s"), "state"))["log"]
        assert s_log == [f"self{b}.{n}" for b in range(4) for n in range(3)]


@on_backends
async def test_a_handler_that_raises_sends_nothing(storage: Storage) -> None:
    async with runtime(storage) as rt:
        await rt.invoke(acct("a"), "deposit", 10)
        with pytest.raises(ValueError, match="after sending"):
            await rt.invoke(
                acct("a"), "transfer_then_fail", {"to": "b", "amount": 5, "note": "never"}
            )
        await rt.invoke(acct("a"), "transfer", {"to": "b", "amount": 1, "note": "real"})

        async def arrived() -> bool:
            return bool(await balance(rt, "b") == 1)

        await settle(arrived)
        assert (await rt.invoke(acct("b"), "state"))["log"] == ["real"]
        assert await balance(rt, "a") == 9


@on_backends
async def test_redelivery_applies_nothing_twice(storage: Storage) -> None:
    async with runtime(storage) as rt:
        await rt.invoke(acct("a"), "transfer", {"to": "b", "amount": 7, "note": "once"})

        async def arrived() -> bool:
            return bool(await balance(rt, "b") == 7)

        await settle(arrived)

        async def cleaned() -> bool:  # else this runtime knows it delivered the entry
            return not await outbox(storage, "a")

        await settle(cleaned)
        # The same message again, as a sweep or a second node would deliver it.
        again = Message(acct("a"), acct("b"), 1, "credit", {"amount": 7, "note": "once"})
        rt._messaging.messenger.enqueue(acct("a"), [again])
        await rt.invoke(acct("a"), "transfer", {"to": "b", "amount": 1, "note": "twice"})

        async def second() -> bool:
            return bool(await balance(rt, "b") == 8)

        await settle(second)
        assert (await rt.invoke(acct("b"), "state"))["log"] == ["once", "twice"]


@on_backends
async def test_a_sweep_of_a_busy_sender_redelivers_nothing_it_delivered(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An entry delivered but not yet deleted (its cleanup waits for the sender's
    # next commit) is read back by the sweep: it must not start a redelivery,
    # which once took the sender's later messages off the straight hand-over
    # for good (a third of the transfers bench's throughput).
    monkeypatch.setattr(delivery, "CLEANUP_AFTER", 60.0)
    async with runtime(storage) as rt:
        await rt.invoke(acct("a"), "transfer", {"to": "b", "amount": 2, "note": "once"})

        async def arrived() -> bool:
            return bool(await balance(rt, "b") == 2)

        await settle(arrived)
        messenger = rt._messaging.messenger
        read_back = await messenger.read_outbox(acct("a"))
        assert [m.seq for m in read_back] == [1]  # delivered, still stored
        messenger.enqueue(acct("a"), read_back)
        assert not messenger.pumping(acct("a"))
        await rt.invoke(acct("a"), "transfer", {"to": "b", "amount": 1, "note": "next"})

        async def next_arrived() -> bool:
            return bool(await balance(rt, "b") == 3)

        await settle(next_arrived)
        assert (await rt.invoke(acct("b"), "state"))["log"] == ["once", "next"]


@on_backends
async def test_an_outbox_left_by_a_dead_runtime_is_delivered_by_the_next(
    storage: Storage, open_storage_again: Reopen
) -> None:
    first = runtime(storage)
    first._messaging.messenger.closing = True  # the process "dies" before delivering
    await first.invoke(acct("a"), "transfer", {"to": "b", "amount": 3, "note": "late"})
    await first.close()
    assert len(await outbox(storage, "a")) == 1
    other = await open_storage_again()
    async with runtime(other) as rt:
        rt.register("acct", Account)

        async def arrived() -> bool:
            return bool(await other.list_keys(acct("a"), records.OUTBOX) == [])

        await settle(arrived, within=5.0)  # the start-up sweep, without invoking a
        assert await balance(rt, "b") == 3
        assert await balance(rt, "a") == -3


@on_backends
async def test_a_failing_message_becomes_a_dead_letter_and_later_ones_flow(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "kelpie.messaging")
    async with runtime(storage) as rt:
        await rt.invoke(acct("a"), "send_poison", "b")

        async def arrived() -> bool:
            return bool((await rt.invoke(acct("b"), "state"))["log"] == ["after-poison"])

        await settle(arrived)
        assert await balance(rt, "b") == 1  # the poison's own change never committed
        letters = await storage.list_keys(acct("b"), records.DEAD_LETTER)
        assert len(letters) == 1
        raw = await storage.get(acct("b"), letters[0])
        assert raw is not None and b"poisoned message" in raw and b"poison" in raw
        assert any("dead letter" in r.getMessage() for r in caplog.records)


@on_backends
async def test_a_deactivated_sender_leaves_no_outbox_cache_behind(storage: Storage) -> None:
    async with runtime(storage) as rt:
        messenger = rt._messaging.messenger
        await rt.invoke(acct("a"), "deposit", 10)
        await rt.invoke(acct("a"), "transfer", {"to": "b", "amount": 1, "note": "t"})
        assert acct("a") in messenger._senders  # its commits keep the cache exact

        async def arrived() -> bool:
            return bool(await balance(rt, "b") == 1)

        await settle(arrived)
        await rt.deactivate(acct("a"))
        assert acct("a") not in messenger._senders
        # Activated again, it reads its outbox afresh and still sends exactly once.
        await rt.invoke(acct("a"), "transfer", {"to": "b", "amount": 2, "note": "t2"})

        async def again() -> bool:
            return bool(await balance(rt, "b") == 3 and not await outbox(storage, "a"))

        await settle(again)
        assert (await rt.invoke(acct("b"), "state"))["log"] == ["t", "t2"]
