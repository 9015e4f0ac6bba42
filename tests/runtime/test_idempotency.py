"""Idempotency keys: a retry of the same call replays; a key reused for another call is refused."""

from __future__ import annotations

import pytest

from kelpie import ActorId, CorruptStateError, IdempotencyKeyReusedError, Runtime, Storage
from kelpie import errors as errors_module
from kelpie.actor.keys import idempotency_key, user_key
from kelpie.testing.plugin import ActorFactory


async def records(storage: Storage, actor: ActorId) -> dict[bytes, bytes | None]:
    """Every stored record of ``actor``: the runtime's and its own."""
    return {key: await storage.get(actor, key) for key in await storage.list_keys(actor)}


async def test_same_key_and_same_call_replays_the_first_result(
    storage: Storage, runtime: Runtime
) -> None:
    actor = ActorId("account", "idem-same")
    first = {"amount": 100, "txn": "t1"}
    assert await runtime.invoke(actor, "deposit", first, idempotency_key="op") == 100
    before = await records(storage, actor)
    # The same payload built another way (key order) is the same call.
    payload = {"txn": "t1", "amount": 100}
    assert await runtime.invoke(actor, "deposit", payload, idempotency_key="op") == 100
    assert await records(storage, actor) == before
    assert await runtime.invoke(actor, "balance") == 100


@pytest.mark.parametrize(
    ("operation", "payload"),
    [("deposit", {"amount": 999}), ("record", 5), ("deposit", {"amount": 100, "txn": "x"})],
    ids=["other-payload", "other-operation", "payload-with-one-more-field"],
)
async def test_same_key_for_another_call_raises_and_changes_nothing(
    storage: Storage, runtime: Runtime, operation: str, payload: object, new_actor: ActorFactory
) -> None:
    actor = new_actor("idem-reused", namespace="account")  # one per case: stores are shared
    assert await runtime.invoke(actor, "deposit", {"amount": 100}, idempotency_key="op") == 100
    before = await records(storage, actor)
    with pytest.raises(IdempotencyKeyReusedError, match=r"'op'.*account/idem-reused"):
        await runtime.invoke(actor, operation, payload, idempotency_key="op")
    assert await records(storage, actor) == before
    # The activation is still consistent: the first call replays, others build on it.
    assert await runtime.invoke(actor, "deposit", {"amount": 100}, idempotency_key="op") == 100
    assert await runtime.invoke(actor, "deposit", {"amount": 1}) == 101
    assert await storage.get(actor, user_key(b"balance")) == b"101"


async def test_a_reused_key_is_refused_by_another_runtime_too(
    storage: Storage, runtime: Runtime
) -> None:
    from tests.runtime.conftest import register_all

    actor = ActorId("account", "idem-other-runtime")
    await runtime.invoke(actor, "deposit", {"amount": 7}, idempotency_key="k" * 300)
    async with register_all(Runtime(storage)) as other:
        with pytest.raises(IdempotencyKeyReusedError):
            await other.invoke(actor, "deposit", {"amount": 8}, idempotency_key="k" * 300)
        assert await other.invoke(actor, "deposit", {"amount": 7}, idempotency_key="k" * 300) == 7
        assert await other.invoke(actor, "balance") == 7


async def test_an_old_record_without_fingerprint_still_replays(
    storage: Storage, runtime: Runtime
) -> None:
    actor = ActorId("account", "idem-old")
    assert await runtime.invoke(actor, "deposit", {"amount": 5}) == 5
    # The layout of the release before fingerprints: the result's JSON alone,
    # stored under b"i" + key (b"j" + sha256 for keys over 240 bytes).
    await storage.set(actor, idempotency_key("old-op"), b'{"balance":100,"note":"old"}')
    await storage.set(actor, idempotency_key("o" * 300), b"100")
    before = await records(storage, actor)
    old = await runtime.invoke(actor, "deposit", {"amount": 100}, idempotency_key="old-op")
    assert old == {"balance": 100, "note": "old"}
    # Without a fingerprint there is nothing to compare: any call with the key replays.
    assert await runtime.invoke(actor, "record", 1, idempotency_key="o" * 300) == 100
    assert await records(storage, actor) == before
    assert await runtime.invoke(actor, "balance") == 5


async def test_an_unreadable_record_is_corrupt_state_and_stays_as_it_is(
    storage: Storage, runtime: Runtime
) -> None:
    actor = ActorId("account", "idem-corrupt")
    for key, raw in (("short", b"\x01abc"), ("future", b"\x02" + bytes(20)), ("junk", b"{")):
        await storage.set(actor, idempotency_key(key), raw)
        with pytest.raises(CorruptStateError, match="account/idem-corrupt"):
            await runtime.invoke(actor, "deposit", {"amount": 1}, idempotency_key=key)
        assert await storage.get(actor, idempotency_key(key)) == raw
    assert await runtime.invoke(actor, "balance") == 0


def test_the_error_is_a_kelpie_error_drawn_in_the_tree() -> None:
    assert issubclass(IdempotencyKeyReusedError, errors_module.KelpieError)
    assert errors_module.IdempotencyKeyReusedError is IdempotencyKeyReusedError
    assert "IdempotencyKeyReusedError" in errors_module.__all__
    assert "IdempotencyKeyReusedError" in (errors_module.__doc__ or "")
