"""Messages ride their target's next invocation: one commit, outcomes as if alone (ADR 0020)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, ClassVar

from kelpie import Actor, ActorContext, Runtime, Storage
from kelpie.actor.codec import StateRecord
from kelpie.actor.keys import STATE_KEY
from kelpie.errors import TransactionConflictError
from kelpie.messaging import records
from kelpie.messaging.attempts import MAX_ATTEMPTS
from tests.messaging.actors import Ledger, acct, settle
from tests.messaging.conftest import on_backends

SENDERS = 6


class Busy(Actor[Ledger]):
    """An account whose ``hold`` keeps its mailbox busy until ``release`` is set."""

    state_type = Ledger
    release: ClassVar[asyncio.Event]
    calls: ClassVar[list[str]] = []
    """The user handlers that ran, in order (message handlers not included)."""
    seen: ClassVar[list[int]] = []
    """The balance each ``deposit`` saw before adding."""

    async def hold(self, ctx: ActorContext[Ledger], payload: None) -> None:
        Busy.calls.append("hold")
        await Busy.release.wait()
        ctx.state.log.append("held")

    async def deposit(self, ctx: ActorContext[Ledger], payload: int) -> int:
        Busy.calls.append("deposit")
        Busy.seen.append(ctx.state.balance)
        ctx.state.balance += payload
        return ctx.state.balance

    async def refuse(self, ctx: ActorContext[Ledger], payload: None) -> None:
        Busy.calls.append("refuse")
        Busy.seen.append(ctx.state.balance)
        ctx.state.balance += 1_000_000
        raise ValueError(f"refused at balance {ctx.state.balance - 1_000_000}")

    async def send_credit(self, ctx: ActorContext[Ledger], payload: str) -> None:
        ctx.send(acct(payload), "credit", 1)

    async def send_poison(self, ctx: ActorContext[Ledger], payload: str) -> None:
        ctx.send(acct(payload), "poison", None)

    async def credit(self, ctx: ActorContext[Ledger], payload: int) -> None:
        ctx.state.balance += payload
        ctx.state.log.append("credit")

    async def poison(self, ctx: ActorContext[Ledger], payload: None) -> None:
        ctx.state.balance += 1000
        raise RuntimeError("poisoned message")

    async def balance(self, ctx: ActorContext[Ledger], payload: None) -> int:
        return ctx.state.balance


def _runtime(storage: Storage, **options: Any) -> Runtime:
    Busy.release = asyncio.Event()
    Busy.calls = []
    Busy.seen = []
    rt = Runtime(storage, invocation_timeout=5.0, **options)
    rt.register("acct", Busy)
    return rt


async def _seq(storage: Storage, name: str) -> int:
    raw = await storage.get(acct(name), STATE_KEY)
    return 0 if raw is None else StateRecord.decode(raw, name).seq


async def _hold_with_arrivals(rt: Runtime, senders: list[str]) -> asyncio.Task[Any]:
    """Keep ``t`` busy in ``hold`` until each sender's credit waits in its mailbox."""
    held = asyncio.create_task(rt.invoke(acct("t"), "hold"))
    await settle(lambda: _true(Busy.calls[-1:] == ["hold"]))
    for name in senders:
        await rt.invoke(acct(name), "send_credit", "t")

    async def all_arrived() -> bool:
        mailbox = rt._mailboxes.get(acct("t"))
        return mailbox is not None and len(mailbox.arrived) == len(senders)

    await settle(all_arrived)
    return held


async def _true(value: bool) -> bool:
    return value


async def _after_hold(held: asyncio.Task[Any], call: Awaitable[Any]) -> Any:
    """Queue ``call`` behind ``hold``, let ``hold`` finish, and return ``call``'s task."""
    task = asyncio.ensure_future(call)
    await asyncio.sleep(0)  # queued in the mailbox, behind hold and beside the arrivals
    Busy.release.set()
    await held
    return task


@on_backends
async def test_messages_waiting_for_a_busy_actor_commit_with_its_next_invocation(
    storage: Storage,
) -> None:
    senders = [f"s{n}" for n in range(SENDERS)]
    async with _runtime(storage) as rt:
        await rt.invoke(acct("t"), "deposit", 100)
        before = await _seq(storage, "t")
        held = await _hold_with_arrivals(rt, senders)
        deposit = await _after_hold(held, rt.invoke(acct("t"), "deposit", 1))
        assert await deposit == 100 + SENDERS + 1
        # hold's commit, then one commit for the deposit and every credit
        assert await _seq(storage, "t") == before + 2
        assert Busy.seen == [0, 100 + SENDERS]  # the credits applied before the deposit ran
        assert await rt.invoke(acct("t"), "balance") == 100 + SENDERS + 1
        for name in senders:  # each sender's mark: its one message, applied once
            raw = await storage.get(acct("t"), records.high_water_key(records.tag(acct(name))))
            assert raw == records.seq_bytes(1)


@on_backends
async def test_a_failing_message_does_not_fail_the_invocation_it_waited_for(
    storage: Storage,
) -> None:
    async with _runtime(storage) as rt:
        held = asyncio.create_task(rt.invoke(acct("t"), "hold"))
        await settle(lambda: _true(Busy.calls[-1:] == ["hold"]))
        await rt.invoke(acct("p"), "send_poison", "t")
        await rt.invoke(acct("c"), "send_credit", "t")

        async def both_arrived() -> bool:
            mailbox = rt._mailboxes.get(acct("t"))
            return mailbox is not None and len(mailbox.arrived) == 2

        await settle(both_arrived)
        deposit = await _after_hold(held, rt.invoke(acct("t"), "deposit", 10))
        assert await deposit == 11  # the credit applied alone first, then the deposit
        assert Busy.calls == ["hold", "deposit"]  # the user's handler ran once

        async def dead_lettered() -> bool:
            return bool(await storage.list_keys(acct("t"), records.DEAD_LETTER))

        await settle(dead_lettered)
        assert await rt.invoke(acct("t"), "balance") == 11  # the poison's +1000 never stayed
        raw = await storage.get(acct("t"), records.failures_key(records.tag(acct("p"))))
        assert raw is None
        letters = await storage.list_keys(acct("t"), records.DEAD_LETTER)
        assert len(letters) == 1 and MAX_ATTEMPTS == 5


@on_backends
async def test_an_invocation_that_raises_leaves_the_messages_it_carried_applied_once(
    storage: Storage,
) -> None:
    senders = [f"s{n}" for n in range(SENDERS)]
    async with _runtime(storage) as rt:
        held = await _hold_with_arrivals(rt, senders)
        refused = await _after_hold(held, rt.invoke(acct("t"), "refuse"))
        try:
            await refused
        except ValueError as exc:
            # It saw the credits: they are committed before its error is returned.
            assert str(exc) == f"refused at balance {SENDERS}"
        else:  # pragma: no cover - the handler always raises
            raise AssertionError("refuse returned")
        assert Busy.calls == ["hold", "refuse"]  # ran once, not again alone
        assert await rt.invoke(acct("t"), "balance") == SENDERS  # credits once, refuse's none


@on_backends
async def test_an_idempotent_replay_still_delivers_the_messages_waiting_for_it(
    storage: Storage,
) -> None:
    senders = [f"s{n}" for n in range(SENDERS)]
    async with _runtime(storage) as rt:
        assert await rt.invoke(acct("t"), "deposit", 5, idempotency_key="k") == 5
        held = await _hold_with_arrivals(rt, senders)
        replay = await _after_hold(held, rt.invoke(acct("t"), "deposit", 5, idempotency_key="k"))
        assert await replay == 5  # answered from its record: the handler did not run
        assert Busy.calls == ["deposit", "hold"]

        async def credited() -> bool:
            return bool(await rt.invoke(acct("t"), "balance") == 5 + SENDERS)

        await settle(credited)


class Conflicting(Busy):
    """``deposit`` conflicts at its first commit (another node's write, simulated)."""

    conflicts: ClassVar[int] = 0

    async def deposit(self, ctx: ActorContext[Ledger], payload: int) -> int:
        result = await super().deposit(ctx, payload)
        if Conflicting.conflicts:
            Conflicting.conflicts -= 1
            raise TransactionConflictError("simulated conflict in the handler")
        return result


@on_backends
async def test_a_conflict_in_the_handler_is_the_callers_and_the_messages_still_apply(
    storage: Storage,
) -> None:
    senders = [f"s{n}" for n in range(SENDERS)]
    Conflicting.conflicts = 1
    rt = _runtime(storage, conflict_retries=3)
    rt.register("acct", Conflicting)
    async with rt:
        held = await _hold_with_arrivals(rt, senders)
        deposit = await _after_hold(held, rt.invoke(acct("t"), "deposit", 1))
        try:
            await deposit
        except TransactionConflictError:
            pass  # a body's own conflict is never retried: the caller's outcome
        else:  # pragma: no cover
            raise AssertionError("the conflict was swallowed")
        assert Busy.calls == ["hold", "deposit"]

        async def credited() -> bool:
            return bool(await rt.invoke(acct("t"), "balance") == SENDERS)

        await settle(credited)
