"""The actor's KV: reserved records out of reach, limits, read-your-writes."""

from __future__ import annotations

import pytest

from kelpie import ActorId, InvalidKeyError, Runtime, Storage
from kelpie.actor.keys import STATE_KEY
from kelpie.runtime import IDEMPOTENCY_WINDOW


async def test_reads_see_the_invocations_own_writes(runtime: Runtime) -> None:
    actor = ActorId("kv", "ryw")
    seen = await runtime.invoke(actor, "read_own_writes")
    assert seen == {"a": False, "b": "2", "keys": ["b", "c"]}
    assert await runtime.invoke(actor, "keys", "") == ["b", "c"]


async def test_runtime_records_are_never_listed_or_reached_by_actor_keys(
    storage: Storage, runtime: Runtime
) -> None:
    actor = ActorId("kv", "reserved")
    await runtime.invoke(actor, "put", {"s": "mine", "i": "mine too"}, idempotency_key="k1")
    assert await runtime.invoke(actor, "keys", "") == ["i", "s"]
    assert await storage.get(actor, STATE_KEY) != b"mine"
    await runtime.invoke(actor, "remove", "s")
    assert await storage.get(actor, STATE_KEY) is not None
    assert await runtime.invoke(actor, "keys", "") == ["i"]


async def test_actor_key_limits_are_enforced_and_write_nothing(
    storage: Storage, runtime: Runtime
) -> None:
    actor = ActorId("kv", "limits")
    await runtime.invoke(actor, "set_key", [7] * 240)
    for bad in ([], [7] * 241):
        with pytest.raises(InvalidKeyError):
            await runtime.invoke(actor, "set_key", bad)
    assert await runtime.invoke(actor, "keys", "") == [bytes([7] * 240).decode()]


async def test_the_last_thousand_idempotency_keys_are_remembered(runtime: Runtime) -> None:
    actor = ActorId("account", "window")
    for n in range(IDEMPOTENCY_WINDOW):
        await runtime.invoke(actor, "deposit", {"amount": 1}, idempotency_key=f"op-{n}")
    # Every one of the last 1,000 keys replays without applying again.
    for n in (0, 1, IDEMPOTENCY_WINDOW // 2, IDEMPOTENCY_WINDOW - 1):
        assert (
            await runtime.invoke(actor, "deposit", {"amount": 1}, idempotency_key=f"op-{n}")
            == n + 1
        )
    assert await runtime.invoke(actor, "balance") == IDEMPOTENCY_WINDOW
    # A long key works too (stored by its hash).
    long_key = "k" * 1000
    assert await runtime.invoke(actor, "deposit", {"amount": 1}, idempotency_key=long_key) == (
        IDEMPOTENCY_WINDOW + 1
    )
    assert await runtime.invoke(actor, "deposit", {"amount": 1}, idempotency_key=long_key) == (
        IDEMPOTENCY_WINDOW + 1
    )
