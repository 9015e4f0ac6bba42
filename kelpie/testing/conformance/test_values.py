"""Round trips of every byte value, the empty value and the size limits, and their errors."""

from __future__ import annotations

import pytest

from kelpie.errors import InvalidKeyError, ValueTooLargeError
from kelpie.storage.limits import MAX_KEY_BYTES, MAX_VALUE_BYTES
from kelpie.storage.protocol import Storage
from kelpie.testing.plugin import ActorFactory

__all__ = ["TestLimits", "TestRoundTrips"]

ALL_BYTES = bytes(range(256))


@pytest.mark.asyncio
class TestRoundTrips:
    async def test_every_byte_value_round_trips_in_values(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("byte-values")
        await storage.set(actor, b"all", ALL_BYTES)
        async with storage.transaction(actor) as txn:
            for b in range(256):
                await txn.set(b"one-" + bytes([b]), bytes([b]))
        assert await storage.get(actor, b"all") == ALL_BYTES
        for b in range(256):
            assert await storage.get(actor, b"one-" + bytes([b])) == bytes([b])

    async def test_every_byte_value_round_trips_in_keys(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("byte-keys")
        async with storage.transaction(actor) as txn:
            for b in reversed(range(256)):
                await txn.set(bytes([b]), b"value-" + bytes([b]))
        for b in range(256):
            assert await storage.get(actor, bytes([b])) == b"value-" + bytes([b])
        assert await storage.list_keys(actor) == [bytes([b]) for b in range(256)]

    async def test_the_largest_key_round_trips(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("largest-key")
        largest = ALL_BYTES  # 256 bytes, every byte value once
        assert len(largest) == MAX_KEY_BYTES
        reversed_key = ALL_BYTES[::-1]
        await storage.set(actor, largest, b"forward")
        async with storage.transaction(actor) as txn:
            await txn.set(reversed_key, b"backward")
        assert await storage.get(actor, largest) == b"forward"
        assert await storage.get(actor, reversed_key) == b"backward"
        assert await storage.list_keys(actor) == [largest, reversed_key]
        assert await storage.list_keys(actor, largest[:-1]) == [largest]
        assert await storage.list_keys(actor, largest) == [largest]

    async def test_the_empty_value_round_trips_and_is_not_absent(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("empty-value")
        await storage.set(actor, b"empty", b"")
        assert await storage.get(actor, b"empty") == b""
        assert await storage.list_keys(actor) == [b"empty"]
        async with storage.transaction(actor) as txn:
            assert await txn.get(b"empty") == b""
            await txn.set(b"also-empty", b"")
            assert await txn.get(b"also-empty") == b""
        assert await storage.get(actor, b"also-empty") == b""

    async def test_the_largest_value_round_trips(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("largest-value")
        largest = ALL_BYTES * (MAX_VALUE_BYTES // 256)
        assert len(largest) == MAX_VALUE_BYTES
        await storage.set(actor, b"big", largest)
        assert await storage.get(actor, b"big") == largest
        await storage.set(actor, b"big", b"small again")
        assert await storage.get(actor, b"big") == b"small again"

    async def test_get_of_an_absent_key_returns_none(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        never_written = new_actor("never-written")
        written = new_actor("written")
        await storage.set(written, b"present", b"1")
        assert await storage.get(never_written, b"absent") is None
        assert await storage.get(written, b"absent") is None
        async with storage.transaction(written) as txn:
            assert await txn.get(b"absent") is None

    async def test_deleting_an_absent_key_is_not_an_error(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("delete-absent")
        await storage.delete(actor, b"absent")
        async with storage.transaction(actor) as txn:
            await txn.delete(b"absent")
        await storage.set(actor, b"present", b"1")
        await storage.delete(actor, b"absent")
        assert await storage.list_keys(actor) == [b"present"]
        assert await storage.get(actor, b"absent") is None

    async def test_set_overwrites_and_delete_removes(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("overwrite")
        await storage.set(actor, b"k", b"first")
        await storage.set(actor, b"k", b"second")
        assert await storage.get(actor, b"k") == b"second"
        await storage.delete(actor, b"k")
        assert await storage.get(actor, b"k") is None
        assert await storage.list_keys(actor) == []
        await storage.delete(actor, b"k")  # twice is fine
        await storage.set(actor, b"k", b"third")
        assert await storage.get(actor, b"k") == b"third"


BAD_KEYS = [
    pytest.param(b"", id="empty-key"),
    pytest.param(b"k" * (MAX_KEY_BYTES + 1), id="257-byte-key"),
]


@pytest.mark.asyncio
class TestLimits:
    """A key or value past a limit raises at the call, before anything is written."""

    @pytest.mark.parametrize("bad_key", BAD_KEYS)
    async def test_a_bad_key_is_rejected_by_every_storage_method_and_nothing_is_written(
        self, storage: Storage, new_actor: ActorFactory, bad_key: bytes
    ) -> None:
        actor = new_actor("bad-key")
        await storage.set(actor, b"existing", b"1")
        with pytest.raises(InvalidKeyError):
            await storage.set(actor, bad_key, b"value")
        with pytest.raises(InvalidKeyError):
            await storage.get(actor, bad_key)
        with pytest.raises(InvalidKeyError):
            await storage.delete(actor, bad_key)
        assert await storage.list_keys(actor) == [b"existing"]
        assert await storage.get(actor, b"existing") == b"1"

    @pytest.mark.parametrize("bad_key", BAD_KEYS)
    async def test_a_bad_key_is_rejected_inside_a_transaction_at_the_call(
        self, storage: Storage, new_actor: ActorFactory, bad_key: bytes
    ) -> None:
        actor = new_actor("bad-key-txn")
        async with storage.transaction(actor) as txn:
            await txn.set(b"good", b"1")
            with pytest.raises(InvalidKeyError):
                await txn.set(bad_key, b"value")
            with pytest.raises(InvalidKeyError):
                await txn.get(bad_key)
            with pytest.raises(InvalidKeyError):
                await txn.delete(bad_key)
            assert await txn.list_keys() == [b"good"]
        # The rejected calls buffered nothing; the rest of the transaction committed.
        assert await storage.list_keys(actor) == [b"good"]

    @pytest.mark.parametrize("bad_key", BAD_KEYS)
    async def test_a_bad_key_escaping_a_transaction_aborts_all_of_it(
        self, storage: Storage, new_actor: ActorFactory, bad_key: bytes
    ) -> None:
        actor = new_actor("bad-key-abort")
        await storage.set(actor, b"old", b"0")
        with pytest.raises(InvalidKeyError):
            async with storage.transaction(actor) as txn:
                await txn.set(b"good", b"1")
                await txn.delete(b"old")
                await txn.set(bad_key, b"value")
        assert await storage.list_keys(actor) == [b"old"]
        assert await storage.get(actor, b"old") == b"0"

    async def test_a_value_past_the_limit_is_rejected_and_nothing_is_written(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("big-value")
        too_big = b"v" * (MAX_VALUE_BYTES + 1)
        await storage.set(actor, b"k", b"old")
        with pytest.raises(ValueTooLargeError):
            await storage.set(actor, b"k", too_big)
        with pytest.raises(ValueTooLargeError):
            await storage.set(actor, b"other", too_big)
        assert await storage.get(actor, b"k") == b"old"
        assert await storage.list_keys(actor) == [b"k"]

    async def test_a_value_past_the_limit_is_rejected_inside_a_transaction_at_the_call(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("big-value-txn")
        too_big = b"v" * (MAX_VALUE_BYTES + 1)
        async with storage.transaction(actor) as txn:
            await txn.set(b"good", b"1")
            with pytest.raises(ValueTooLargeError):
                await txn.set(b"bad", too_big)
            assert await txn.get(b"bad") is None
            assert await txn.list_keys() == [b"good"]
        assert await storage.list_keys(actor) == [b"good"]
        with pytest.raises(ValueTooLargeError):
            async with storage.transaction(actor) as txn:
                await txn.set(b"also-good", b"2")
                await txn.set(b"bad", too_big)
        assert await storage.list_keys(actor) == [b"good"]

    async def test_limit_errors_are_value_errors(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("value-errors")
        with pytest.raises(ValueError):
            await storage.set(actor, b"", b"v")
        with pytest.raises(ValueError):
            await storage.set(actor, b"k", b"v" * (MAX_VALUE_BYTES + 1))

    async def test_str_keys_and_values_raise_type_error_and_nothing_is_written(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("str")
        with pytest.raises(TypeError):
            await storage.set(actor, "key", b"value")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await storage.set(actor, b"key", "value")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await storage.get(actor, "key")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await storage.delete(actor, "key")  # type: ignore[arg-type]
        async with storage.transaction(actor) as txn:
            with pytest.raises(TypeError):
                await txn.set("key", b"value")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await txn.set(b"key", "value")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await txn.get("key")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await txn.delete("key")  # type: ignore[arg-type]
            assert await txn.list_keys() == []
        assert await storage.list_keys(actor) == []
        assert await storage.get(actor, b"key") is None
