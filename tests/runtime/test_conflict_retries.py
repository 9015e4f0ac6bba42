"""``Runtime(conflict_retries=N)``: conflicts that stored nothing run again; nothing else does."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from kelpie import (
    Actor,
    ActorContext,
    ActorId,
    CommitOutcomeUnknownError,
    ConfigError,
    Runtime,
    Storage,
    TransactionConflictError,
)
from kelpie.actor.keys import STATE_KEY, user_key
from kelpie.runtime.retry import BACKOFF_CAP, BACKOFF_FIRST
from kelpie.storage.protocol import Transaction
from kelpie.storage.wrapper import StorageWrapper, TransactionWrapper
from tests.runtime.conftest import register_all
from tests.runtime.scripted_storage import ScriptedStorage

Reopen = Callable[[], Awaitable[Storage]]

handler_runs: list[str] = []
"""Every handler run of ``Tally``, in order."""


@dataclass
class Total:
    total: int = 0


class Tally(Actor[Total]):
    """Counts its handler runs, so a test can tell a retry from a single run."""

    state_type = Total

    async def add(self, ctx: ActorContext[Total], payload: dict[str, int]) -> int:
        handler_runs.append("add")
        ctx.state.total += payload.pop("amount")  # a retry must still find it
        await ctx.kv_set(b"total", str(ctx.state.total).encode())
        return ctx.state.total

    async def read_kv(self, ctx: ActorContext[Total], payload: None) -> str | None:
        handler_runs.append("read_kv")
        raw = await ctx.kv_get(b"total")
        return None if raw is None else raw.decode()

    async def fail(self, ctx: ActorContext[Total], payload: None) -> None:
        handler_runs.append("fail")
        ctx.state.total += 1
        raise ValueError("the handler failed")

    async def conflict_elsewhere(self, ctx: ActorContext[Total], payload: None) -> None:
        handler_runs.append("conflict_elsewhere")
        ctx.state.total += 1
        raise TransactionConflictError("a transaction of the handler's own conflicted")


class RecordingRandom(random.Random):
    """A seeded ``random.Random`` that remembers every jitter it drew."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.draws: list[tuple[float, float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        value = super().uniform(a, b)
        self.draws.append((a, b, value))
        return value


class _ConflictingTransaction(TransactionWrapper):
    def __init__(self, owner: ConflictingStorage, inner: Transaction) -> None:
        super().__init__(inner)
        self._owner = owner

    async def commit(self) -> None:
        self.ended = True
        self._owner.commits += 1
        self._owner.attempted.set()
        if self._owner.conflicts_left > 0:
            self._owner.conflicts_left -= 1
            await self.inner.abort()
            raise TransactionConflictError("injected: another commit landed first")
        await self.inner.commit()


class ConflictingStorage(StorageWrapper):
    """Fails the next ``conflicts`` commits with ``TransactionConflictError``, writing nothing."""

    def __init__(self, inner: Storage, conflicts: int = 0) -> None:
        super().__init__(inner)
        self.conflicts_left = conflicts
        self.commits = 0
        self.attempted = asyncio.Event()
        """Set at the first commit."""

    def transaction(self, actor: ActorId) -> Transaction:
        return _ConflictingTransaction(self, self.inner.transaction(actor))


def tally_runtime(storage: Storage, retries: int, seed: int) -> tuple[Runtime, RecordingRandom]:
    print(f"jitter seed {seed}")
    rng = RecordingRandom(seed)
    runtime = Runtime(storage, conflict_retries=retries, rng=rng)
    runtime.register("tally", Tally)
    handler_runs.clear()
    return runtime, rng


async def test_without_retries_a_stale_runtime_hands_the_conflict_to_the_caller(
    storage: Storage, open_storage_again: Reopen
) -> None:
    first = register_all(Runtime(storage))
    second = register_all(Runtime(await open_storage_again()))
    actor = ActorId("account", "no-retries")
    try:
        assert await first.invoke(actor, "deposit", {"amount": 1}) == 1
        assert await second.invoke(actor, "deposit", {"amount": 10}) == 11
        with pytest.raises(TransactionConflictError):
            await first.invoke(actor, "deposit", {"amount": 100})
        assert await storage.get(actor, user_key(b"balance")) == b"11"
    finally:
        await first.close()
        await second.close()


async def test_with_retries_a_stale_runtime_reloads_and_applies_the_call_exactly_once(
    storage: Storage, open_storage_again: Reopen
) -> None:
    seed = 1701
    print(f"jitter seed {seed}")
    rng = RecordingRandom(seed)
    first = register_all(Runtime(storage, conflict_retries=2, rng=rng))
    second = register_all(Runtime(await open_storage_again()))
    actor = ActorId("account", "retries")
    try:
        assert await first.invoke(actor, "deposit", {"amount": 1}) == 1
        assert await second.invoke(actor, "deposit", {"amount": 10}) == 11
        # first's activation is stale: its fence conflicts, it reloads, and the
        # one retry builds on second's commit.
        assert await first.invoke(actor, "deposit", {"amount": 100}) == 111
        assert len(rng.draws) == 1
        assert await storage.get(actor, user_key(b"balance")) == b"111"
    finally:
        await first.close()
        await second.close()


async def test_retries_are_bounded_and_wait_jittered_delays_on_the_loop_clock(
    storage: Storage,
) -> None:
    conflicting = ConflictingStorage(storage, conflicts=10**9)
    runtime, rng = tally_runtime(conflicting, retries=3, seed=42)
    actor = ActorId("tally", "always-conflicts")
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises(TransactionConflictError, match="injected"):
            await runtime.invoke(actor, "add", {"amount": 5})
        elapsed = loop.time() - started
        assert conflicting.commits == 4  # the first attempt and three retries
        assert handler_runs == ["add"] * 4
        assert len(rng.draws) == 3
        steps = [min(BACKOFF_CAP, BACKOFF_FIRST * 2**n) for n in range(3)]
        delays = [step / 2 + draw[2] for step, draw in zip(steps, rng.draws, strict=True)]
        for step, (low, high, _) in zip(steps, rng.draws, strict=True):
            assert (low, high) == (0.0, step / 2)
        assert elapsed >= sum(delays) * 0.9
        assert await storage.get(actor, STATE_KEY) is None
    finally:
        await runtime.close()


async def test_a_read_only_invocations_validation_conflict_is_retried(storage: Storage) -> None:
    conflicting = ConflictingStorage(storage)
    runtime, rng = tally_runtime(conflicting, retries=1, seed=7)
    actor = ActorId("tally", "read-only")
    try:
        assert await runtime.invoke(actor, "add", {"amount": 3}) == 3
        conflicting.conflicts_left = 1  # the read-only commit's validation conflicts once
        assert await runtime.invoke(actor, "read_kv") == "3"
        assert handler_runs == ["add", "read_kv", "read_kv"]
        assert len(rng.draws) == 1
    finally:
        await runtime.close()


async def test_a_retry_sees_the_payload_as_the_caller_sent_it(storage: Storage) -> None:
    conflicting = ConflictingStorage(storage, conflicts=1)
    runtime, _ = tally_runtime(conflicting, retries=1, seed=8)
    actor = ActorId("tally", "payload")
    payload = {"amount": 4}
    try:
        assert await runtime.invoke(actor, "add", payload) == 4  # the handler pops "amount"
        assert handler_runs == ["add", "add"]
        assert payload == {"amount": 4}
        assert await storage.get(actor, user_key(b"total")) == b"4"
    finally:
        await runtime.close()


async def test_retries_keep_the_actors_one_at_a_time_order(storage: Storage) -> None:
    conflicting = ConflictingStorage(storage, conflicts=1)
    runtime, _ = tally_runtime(conflicting, retries=2, seed=9)
    actor = ActorId("tally", "order")
    try:
        calls = [
            asyncio.create_task(runtime.invoke(actor, "add", {"amount": n})) for n in (1, 10, 100)
        ]
        assert await asyncio.gather(*calls) == [1, 11, 111]
        assert handler_runs == ["add"] * 4  # the first ran twice, before the others
    finally:
        await runtime.close()


async def test_a_caller_that_gives_up_stops_the_retries(storage: Storage) -> None:
    conflicting = ConflictingStorage(storage, conflicts=10**9)
    runtime, rng = tally_runtime(conflicting, retries=5, seed=12)
    actor = ActorId("tally", "gives-up")
    try:
        call = asyncio.create_task(runtime.invoke(actor, "add", {"amount": 1}))
        await conflicting.attempted.wait()
        call.cancel()  # during the first backoff
        await asyncio.sleep(BACKOFF_CAP * 2)
        assert call.cancelled()
        assert conflicting.commits == 1
        assert len(rng.draws) == 1
        conflicting.conflicts_left = 0
        assert await runtime.invoke(actor, "add", {"amount": 2}) == 2
    finally:
        await runtime.close()


@pytest.mark.parametrize("operation", ["fail", "conflict_elsewhere"])
async def test_a_handler_exception_is_never_retried(storage: Storage, operation: str) -> None:
    conflicting = ConflictingStorage(storage)
    runtime, rng = tally_runtime(conflicting, retries=3, seed=10)
    actor = ActorId("tally", f"handler-{operation}")
    expected = ValueError if operation == "fail" else TransactionConflictError
    try:
        assert await runtime.invoke(actor, "add", {"amount": 2}) == 2
        with pytest.raises(expected):
            await runtime.invoke(actor, operation)
        assert handler_runs == ["add", operation]
        assert rng.draws == []
        assert await runtime.invoke(actor, "add", {"amount": 1}) == 3
    finally:
        await runtime.close()


async def test_an_unknown_outcome_is_never_retried(storage: Storage) -> None:
    scripted = ScriptedStorage(storage)
    runtime, rng = tally_runtime(scripted, retries=3, seed=11)
    actor = ActorId("tally", "unknown-outcome")
    try:
        assert await runtime.invoke(actor, "add", {"amount": 2}) == 2
        scripted.fail_next_commit("not-applied-reply-lost")
        with pytest.raises(CommitOutcomeUnknownError):
            await runtime.invoke(actor, "add", {"amount": 5})
        assert handler_runs == ["add", "add"]
        assert rng.draws == []
        assert scripted.commits_failed == 1
        assert await runtime.invoke(actor, "add", {"amount": 1}) == 3
    finally:
        await runtime.close()


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2", None])
def test_conflict_retries_must_be_an_int_of_zero_or_more(storage: Storage, bad: Any) -> None:
    with pytest.raises(ConfigError, match="conflict_retries"):
        Runtime(storage, conflict_retries=bad)


def test_the_jitter_source_must_be_a_random_random(storage: Storage) -> None:
    with pytest.raises(ConfigError, match="rng"):
        Runtime(storage, conflict_retries=1, rng=object())  # type: ignore[arg-type]
    assert Runtime(storage).conflict_retries == 0
