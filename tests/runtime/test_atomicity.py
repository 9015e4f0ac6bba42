"""One invocation, one transaction: the seed scenario and every failure path."""

from __future__ import annotations

import pytest

from kelpie import (
    ActorId,
    CommitOutcomeUnknownError,
    InvocationTimeoutError,
    Runtime,
    SerializationError,
    Storage,
    StorageUnavailableError,
)
from kelpie.actor.codec import JsonCodec, StateRecord
from kelpie.actor.keys import STATE_KEY, user_key
from tests.runtime.actors import Account
from tests.runtime.conftest import register_all
from tests.runtime.scripted_storage import ScriptedStorage


def writes_state(actor: ActorId, writes: dict[bytes, bytes | None]) -> bool:
    return STATE_KEY in writes


class NaiveContext:
    """The atomicity gap, kept on purpose: KV goes straight to storage, the
    state is saved later in a separate step."""

    def __init__(self, storage: Storage, actor: ActorId) -> None:
        self.storage = storage
        self.actor = actor
        self.state = Account()

    async def kv_set(self, key: bytes, value: bytes) -> None:
        await self.storage.set(self.actor, user_key(key), value)

    async def save_state(self) -> None:
        record = StateRecord(1, 0, "json", JsonCodec().encode(self.state))
        await self.storage.set(self.actor, STATE_KEY, record.encode())


async def stored_balances(storage: Storage, actor: ActorId) -> tuple[int | None, int | None]:
    """(state balance, KV balance) as stored, None where absent."""
    raw_state = await storage.get(actor, STATE_KEY)
    state = None
    if raw_state is not None:
        state = JsonCodec().decode(StateRecord.decode(raw_state, "t").payload, Account).balance
    raw_kv = await storage.get(actor, user_key(b"balance"))
    return state, None if raw_kv is None else int(raw_kv)


async def test_naive_direct_kv_write_is_left_inconsistent_when_the_state_save_fails(
    storage: Storage, scripted: ScriptedStorage
) -> None:
    actor = ActorId("account", "naive")
    ctx = NaiveContext(scripted, actor)
    ctx.state.balance += 100
    await ctx.kv_set(b"balance", b"100")
    scripted.fail_next_commit("not-applied", writes_state)
    with pytest.raises(StorageUnavailableError):
        await ctx.save_state()
    # The bug this library exists to prevent: the balance moved, the state never did.
    assert await stored_balances(storage, actor) == (None, 100)


async def test_runtime_stores_neither_state_nor_kv_when_the_commit_fails(
    storage: Storage, scripted: ScriptedStorage, runtime: Runtime
) -> None:
    actor = ActorId("account", "atomic")
    assert await runtime.invoke(actor, "deposit", {"amount": 5, "txn": "t0"}) == 5
    scripted.fail_next_commit("not-applied", writes_state)
    with pytest.raises(StorageUnavailableError):
        await runtime.invoke(actor, "deposit", {"amount": 100, "txn": "t1"})
    assert await stored_balances(storage, actor) == (5, 5)
    # Memory was rolled back too: the next commit does not carry the failed deposit.
    assert await runtime.invoke(actor, "deposit", {"amount": 1, "txn": "t2"}) == 6
    assert await stored_balances(storage, actor) == (6, 6)


async def test_handler_exception_reaches_caller_unchanged_and_nothing_is_stored(
    storage: Storage, runtime: Runtime
) -> None:
    actor = ActorId("account", "raiser")
    await runtime.invoke(actor, "deposit", {"amount": 7})
    with pytest.raises(ValueError, match="handler failed after writing"):
        await runtime.invoke(actor, "deposit_then_fail", {"amount": 1000})
    assert await runtime.invoke(actor, "balance") == 7
    assert await runtime.invoke(actor, "kv_balance") == "7"
    assert await stored_balances(storage, actor) == (7, 7)


async def test_handler_past_the_timeout_raises_and_stores_nothing(storage: Storage) -> None:
    runtime = register_all(Runtime(storage, invocation_timeout=0.05))
    actor = ActorId("account", "slowpoke")
    try:
        with pytest.raises(InvocationTimeoutError):
            await runtime.invoke(actor, "slow", 30.0)
        assert await runtime.invoke(actor, "balance") == 0
        assert await storage.get(actor, user_key(b"slow")) is None
        assert await storage.get(actor, STATE_KEY) is None
    finally:
        await runtime.close()


async def test_commit_outcome_unknown_that_landed_reloads_the_actor(
    storage: Storage, scripted: ScriptedStorage, runtime: Runtime
) -> None:
    actor = ActorId("account", "lost-reply")
    await runtime.invoke(actor, "deposit", {"amount": 1})
    scripted.fail_next_commit("applied-reply-lost")
    with pytest.raises(CommitOutcomeUnknownError):
        await runtime.invoke(actor, "deposit", {"amount": 10})
    # The activation was dropped; the reload sees what actually landed.
    assert await runtime.invoke(actor, "balance") == 11
    assert await stored_balances(storage, actor) == (11, 11)


async def test_commit_outcome_unknown_that_did_not_land_reloads_the_actor(
    storage: Storage, scripted: ScriptedStorage, runtime: Runtime
) -> None:
    actor = ActorId("account", "lost-commit")
    await runtime.invoke(actor, "deposit", {"amount": 1})
    scripted.fail_next_commit("not-applied-reply-lost")
    with pytest.raises(CommitOutcomeUnknownError):
        await runtime.invoke(actor, "deposit", {"amount": 10})
    assert await runtime.invoke(actor, "balance") == 1
    assert await stored_balances(storage, actor) == (1, 1)


@pytest.mark.parametrize("outcome", ["applied-reply-lost", "not-applied-reply-lost"])
async def test_retry_with_idempotency_key_applies_exactly_once_after_unknown_outcome(
    storage: Storage, scripted: ScriptedStorage, runtime: Runtime, outcome: str
) -> None:
    actor = ActorId("account", f"idem-{outcome}")
    scripted.fail_next_commit(outcome)  # type: ignore[arg-type]
    with pytest.raises(CommitOutcomeUnknownError):
        await runtime.invoke(actor, "deposit", {"amount": 10}, idempotency_key="op-1")
    first = await runtime.invoke(actor, "deposit", {"amount": 10}, idempotency_key="op-1")
    again = await runtime.invoke(actor, "deposit", {"amount": 10}, idempotency_key="op-1")
    assert first == again == 10
    assert await stored_balances(storage, actor) == (10, 10)


async def test_activation_read_error_fails_the_invocation_and_never_resets_state(
    storage: Storage, scripted: ScriptedStorage
) -> None:
    actor = ActorId("account", "unreadable")
    first = register_all(Runtime(scripted))
    await first.invoke(actor, "deposit", {"amount": 42})
    await first.close()
    second = register_all(Runtime(scripted))
    try:
        scripted.fail_reads(1)
        with pytest.raises(StorageUnavailableError):
            await second.invoke(actor, "deposit", {"amount": 1})
        assert await stored_balances(storage, actor) == (42, 42)
        assert await second.invoke(actor, "deposit", {"amount": 1}) == 43
    finally:
        await second.close()


async def test_unencodable_result_state_or_payload_stores_nothing(
    storage: Storage, runtime: Runtime
) -> None:
    actor = ActorId("account", "serial")
    await runtime.invoke(actor, "deposit", {"amount": 3})
    with pytest.raises(SerializationError):
        await runtime.invoke(actor, "bad_result")
    with pytest.raises(SerializationError):
        await runtime.invoke(actor, "deposit", {"amount": 1, "txn": object()})
    with pytest.raises(SerializationError):
        await runtime.invoke(actor, "deposit", {"amount": float("nan")})
    with pytest.raises(TypeError):  # SerializationError is a TypeError
        await runtime.invoke(actor, "record", {1, 2})
    assert await runtime.invoke(actor, "balance") == 3
    assert await stored_balances(storage, actor) == (3, 3)


async def test_replayed_idempotent_result_is_the_stored_json(runtime: Runtime) -> None:
    actor = ActorId("account", "tuple")
    first = await runtime.invoke(actor, "tuple_result", idempotency_key="k")
    replay = await runtime.invoke(actor, "tuple_result", idempotency_key="k")
    assert first == (1, 2)
    assert replay == [1, 2]
    assert await runtime.invoke(actor, "balance") == 1
