"""Dead letters: attempts counted at the target, across restarts; deliveries that share a commit."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import pytest

from kelpie import Actor, ActorContext, ActorId, Runtime, Storage
from kelpie.messaging import calls, records
from kelpie.messaging.attempts import MAX_ATTEMPTS
from tests.messaging.actors import Ledger, acct, settle
from tests.messaging.conftest import on_backends


class Poisoned(Actor[Ledger]):
    """``poison`` always raises; ``runs`` counts its runs in this process."""

    state_type = Ledger
    runs: ClassVar[int] = 0
    fires: ClassVar[int] = 0

    async def send_poison(self, ctx: ActorContext[Ledger], payload: str) -> None:
        ctx.send(acct(payload), "poison", None)
        ctx.send(acct(payload), "credit", 1)

    async def poison(self, ctx: ActorContext[Ledger], payload: Any) -> None:
        Poisoned.runs += 1
        ctx.state.balance += 1000
        raise RuntimeError(f"poisoned run {Poisoned.runs}")

    async def send_lone_poison(self, ctx: ActorContext[Ledger], payload: str) -> None:
        ctx.send(acct(payload), "poison", None)

    async def send_spread(self, ctx: ActorContext[Ledger], payload: list[str]) -> None:
        poisoned, other = payload
        ctx.send(acct(poisoned), "poison", None)
        ctx.send(acct(other), "credit", 1)
        ctx.send(acct(poisoned), "credit", 10)  # after the poison, in order

    async def send_credit(self, ctx: ActorContext[Ledger], payload: str) -> None:
        ctx.send(acct(payload), "credit", 1)

    async def send_nowhere(self, ctx: ActorContext[Ledger], payload: None) -> None:
        ctx.send(ActorId("nowhere", "x"), "credit", 1)  # no actor type will ever serve it

    async def send_two_late(self, ctx: ActorContext[Ledger], payload: None) -> None:
        ctx.send(_LATE, "credit", 1)  # no actor type serves "late" yet: handing it over raises
        ctx.send(_LATE, "credit", 2)

    async def credit(self, ctx: ActorContext[Ledger], payload: int) -> None:
        ctx.state.balance += payload

    async def balance(self, ctx: ActorContext[Ledger], payload: None) -> int:
        return ctx.state.balance

    async def remind_poison(self, ctx: ActorContext[Ledger], payload: None) -> None:
        ctx.set_reminder("bad", after=0, operation="explode")

    async def explode(self, ctx: ActorContext[Ledger], payload: None) -> None:
        Poisoned.fires += 1
        raise RuntimeError(f"exploded fire {Poisoned.fires}")


_LATE = ActorId("late", "x")


def _runtime(storage: Storage) -> Runtime:
    rt = Runtime(storage, invocation_timeout=5.0)
    rt.register("acct", Poisoned)
    return rt


async def _dead_lettered(storage: Storage, target: ActorId) -> bool:
    """Read from storage: a call on the target would carry the pending messages itself."""
    return bool(await storage.list_keys(target, records.DEAD_LETTER))


async def _recorded_attempts(storage: Storage) -> int:
    raw = await storage.get(acct("b"), records.failures_key(records.tag(acct("a"))))
    return records.unpack_failures(raw, 1, "failures")[0]


@on_backends
async def test_attempts_at_a_poison_message_survive_a_restart_of_the_runtime(
    storage: Storage,
) -> None:
    Poisoned.runs = 0
    async with _runtime(storage) as rt:
        await rt.invoke(acct("a"), "send_poison", "b")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while Poisoned.runs < 2:
            assert loop.time() < deadline, "the poison message never ran twice"
            await asyncio.sleep(0.001)
    # The runtime closed after 2 or 3 failed runs, each recorded at the target.
    before_restart = Poisoned.runs
    assert 2 <= before_restart < MAX_ATTEMPTS
    assert await _recorded_attempts(storage) == before_restart

    async with _runtime(storage) as rt:  # its sweep finds a's outbox and goes on counting
        await settle(lambda: _dead_lettered(storage, acct("b")))
        assert Poisoned.runs == MAX_ATTEMPTS  # not MAX_ATTEMPTS more after the restart

        async def credited() -> bool:
            return bool(await rt.invoke(acct("b"), "balance") == 1)

        await settle(credited)  # the message after the poison flows
    letters = await storage.list_keys(acct("b"), records.DEAD_LETTER)
    assert len(letters) == 1
    raw = await storage.get(acct("b"), letters[0])
    assert raw is not None and b"poisoned run" in raw
    # the count is gone with the message it counted
    assert await storage.get(acct("b"), records.failures_key(records.tag(acct("a")))) is None


@on_backends
async def test_a_lone_poison_message_runs_exactly_max_attempts_times(storage: Storage) -> None:
    # A lone new message is handed straight to its target (no pump); its first
    # failure must be counted like every later one, or it runs once too often.
    Poisoned.runs = 0
    async with _runtime(storage) as rt:
        await rt.invoke(acct("a"), "send_lone_poison", "b")

        await settle(lambda: _dead_lettered(storage, acct("b")))
        assert Poisoned.runs == MAX_ATTEMPTS
        await rt.invoke(acct("a"), "send_credit", "b")

        async def credited() -> bool:
            return bool(await rt.invoke(acct("b"), "balance") == 1)

        await settle(credited)  # the poison's state changes never stuck; the credit did
    assert Poisoned.runs == MAX_ATTEMPTS


@on_backends
async def test_a_poison_among_messages_in_flight_to_several_targets_is_counted_and_ordered(
    storage: Storage,
) -> None:
    # One commit sends to two targets: the first message to each is handed over at
    # once; the poison fails while the other may still be in flight, and the credit
    # behind it waits for its dead letter.
    Poisoned.runs = 0
    async with _runtime(storage) as rt:
        await rt.invoke(acct("a"), "send_spread", ["b", "c"])

        await settle(lambda: _dead_lettered(storage, acct("b")))
        assert Poisoned.runs == MAX_ATTEMPTS

        async def settled() -> bool:
            return bool(
                await rt.invoke(acct("b"), "balance") == 10
                and await rt.invoke(acct("c"), "balance") == 1
            )

        await settle(settled)
        assert await rt.invoke(acct("c"), "balance") == 1  # once
    assert Poisoned.runs == MAX_ATTEMPTS


@on_backends
async def test_a_hand_over_that_raises_with_more_pending_is_retried(storage: Storage) -> None:
    # Two messages to one target whose type is not registered yet: handing the
    # first over raises with nothing in flight, so a pump must take it over (it
    # once waited for a flight that would never land) and deliver both once the
    # type is registered.
    async with _runtime(storage) as rt:
        await rt.invoke(acct("a"), "send_two_late", None)
        rt.register("late", Poisoned)

        async def emptied() -> bool:
            return bool(await storage.list_keys(acct("a"), records.OUTBOX) == [])

        await settle(emptied)
        assert await rt.invoke(_LATE, "balance") == 3


@on_backends
async def test_a_message_no_runtime_can_dead_letter_is_not_logged_as_one(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Its target's type is registered nowhere: the dead letter cannot be stored
    # either, so the message stays in the outbox and the log must say so.
    caplog.set_level(logging.WARNING, "kelpie.messaging")
    async with _runtime(storage) as rt:
        await rt.invoke(acct("a"), "send_nowhere", None)

        async def reported() -> bool:
            return any("storing it as a dead letter" in r.getMessage() for r in caplog.records)

        await settle(reported)
    assert not any("stored as a dead letter" in r.getMessage() for r in caplog.records)
    assert len(await storage.list_keys(acct("a"), records.OUTBOX)) == 1  # kept, retried later


@on_backends
async def test_a_message_no_runtime_can_dead_letter_is_warned_about_once(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Retried every sweep, perhaps for good: one warning, then INFO lines.
    caplog.set_level(logging.INFO, "kelpie.messaging")
    async with _runtime(storage) as rt:
        rt._messaging.poll = 0.05  # sweeps come often, so the retries do
        await rt.invoke(acct("a"), "send_nowhere", None)

        def reports(level: int) -> int:
            return sum(
                "storing it as a dead letter" in r.getMessage() and r.levelno == level
                for r in caplog.records
            )

        async def retried() -> bool:
            return reports(logging.INFO) >= 3

        await settle(retried)
    assert reports(logging.WARNING) == 1
    assert len(await storage.list_keys(acct("a"), records.OUTBOX)) == 1  # still kept


@on_backends
async def test_messages_reaching_a_busy_target_share_a_commit_and_a_poison_one_fails_alone(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    together: list[int] = []
    apply_together = calls.apply_together

    async def counting(actor: Any, ctx: Any, batch: list[calls.Delivery]) -> None:
        together.append(len(batch))  # carried by a user's call, or a commit of their own
        await apply_together(actor, ctx, batch)

    monkeypatch.setattr(calls, "apply_together", counting)
    Poisoned.runs = 0
    senders = [acct(f"s{n}") for n in range(20)]
    async with _runtime(storage) as rt:
        await asyncio.gather(
            rt.invoke(acct("p"), "send_poison", "t"),
            *(rt.invoke(sender, "send_credit", "t") for sender in senders),
        )

        async def arrived() -> bool:
            return bool(await rt.invoke(acct("t"), "balance") == len(senders) + 1)

        await settle(arrived)
        letters = await storage.list_keys(acct("t"), records.DEAD_LETTER)
    assert len(letters) == 1  # the poison, alone; every credit applied exactly once
    assert Poisoned.runs >= MAX_ATTEMPTS
    assert together and max(together) > 1, together  # several messages in one commit


@on_backends
async def test_failed_fires_of_a_reminder_are_counted_in_its_record_across_a_restart(
    storage: Storage,
) -> None:
    Poisoned.fires = 0
    async with _runtime(storage) as rt:
        await rt.invoke(acct("r"), "remind_poison")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while Poisoned.fires < 2:
            assert loop.time() < deadline, "the reminder never fired twice"
            await asyncio.sleep(0.001)
    before_restart = Poisoned.fires
    assert 2 <= before_restart < MAX_ATTEMPTS

    async with _runtime(storage):

        async def given_up() -> bool:
            return bool(await storage.list_keys(acct("r"), records.DEAD_LETTER))

        await settle(given_up)
    assert Poisoned.fires == MAX_ATTEMPTS  # not MAX_ATTEMPTS more after the restart
    assert await storage.get(acct("r"), records.reminder_key("bad")) is None  # one-shot: gone
