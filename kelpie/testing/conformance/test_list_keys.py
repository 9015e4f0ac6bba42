"""``list_keys``: bytewise order, exact prefixes, and isolation between actors."""

from __future__ import annotations

import pytest

from kelpie.identity import ActorId
from kelpie.storage.protocol import Storage
from kelpie.testing.conformance._support import COLLIDING_PAIRS, colliding_pair
from kelpie.testing.plugin import ActorFactory

__all__ = ["TestActorIsolation", "TestListKeys"]

# Edge bytes, and keys that are prefixes of each other.
KEYS = [
    b"\x00",
    b"\x00\x00",
    b"\x00\xff",
    b"\x01",
    b"\x7f",
    b"\x80",
    b"a",
    b"a\x00",
    b"a\xff",
    b"a\xff\xff",
    b"ab",
    b"abc",
    b"b",
    b"\xff",
    b"\xff\x00",
    b"\xff\xff",
    b"\xff\xff\xff",
]
ABSENT_PREFIXES = [b"c", b"\x00\x01", b"ab\x00", b"abcd", b"\xff\xff\xff\xff", b"\xfe", b"a" * 256]


def _expected(keys: list[bytes], prefix: bytes) -> list[bytes]:
    return sorted(key for key in keys if key.startswith(prefix))


@pytest.mark.asyncio
class TestListKeys:
    async def test_keys_are_listed_in_bytewise_order(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("order")
        half = len(KEYS) // 2
        for key in reversed(KEYS[:half]):
            await storage.set(actor, key, b"v")
        async with storage.transaction(actor) as txn:
            for key in reversed(KEYS[half:]):
                await txn.set(key, b"v")
        listed = await storage.list_keys(actor)
        assert listed == sorted(KEYS)
        assert listed[0] == b"\x00" and listed[-1] == b"\xff\xff\xff"

    async def test_a_prefix_lists_exactly_the_keys_that_start_with_it(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("prefix")
        async with storage.transaction(actor) as txn:
            for key in KEYS:
                await txn.set(key, b"v")
        prefixes = {key[:n] for key in KEYS for n in range(len(key) + 1)} | set(ABSENT_PREFIXES)
        for prefix in sorted(prefixes):
            assert await storage.list_keys(actor, prefix) == _expected(KEYS, prefix), prefix
        async with storage.transaction(actor) as txn:
            for prefix in sorted(prefixes):
                assert await txn.list_keys(prefix) == _expected(KEYS, prefix), prefix

    async def test_deleted_keys_are_not_listed_and_an_unknown_actor_lists_nothing(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("deleted")
        assert await storage.list_keys(actor) == []
        async with storage.transaction(actor) as txn:
            for key in KEYS:
                await txn.set(key, b"v")
        for key in KEYS[::2]:
            await storage.delete(actor, key)
        assert await storage.list_keys(actor) == sorted(KEYS[1::2])
        async with storage.transaction(actor) as txn:
            for key in KEYS:
                await txn.delete(key)
        assert await storage.list_keys(actor) == []
        assert await storage.list_keys(new_actor("never-written"), b"a") == []


@pytest.mark.asyncio
class TestActorIsolation:
    """Actors never see each other's records, whatever their ids contain."""

    @pytest.mark.parametrize("label", COLLIDING_PAIRS)
    async def test_actors_with_colliding_naive_encodings_are_isolated(
        self, storage: Storage, new_actor: ActorFactory, label: str
    ) -> None:
        first, second = colliding_pair(label, new_actor.suffix())
        new_actor.track(first, second)
        await storage.set(first, b"shared", b"first")
        await storage.set(second, b"shared", b"second")
        async with storage.transaction(first) as txn:
            await txn.set(b"only-first", b"1")
        assert await storage.get(first, b"shared") == b"first"
        assert await storage.get(second, b"shared") == b"second"
        assert await storage.list_keys(first) == [b"only-first", b"shared"]
        assert await storage.list_keys(second) == [b"shared"]
        assert await storage.get(second, b"only-first") is None
        await storage.delete(second, b"shared")
        assert await storage.get(first, b"shared") == b"first"
        assert await storage.list_keys(second) == []

    async def test_an_actor_key_never_aliases_another_actors_id_and_key(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        # Under "ns:id/key", (a, "b", b"c/d") and (a, "b/c", b"d") are one record.
        unique = new_actor.suffix()
        short = ActorId("a", f"b{unique}")
        long = ActorId("a", f"b{unique}/c")
        await storage.set(short, b"c/d", b"short")
        await storage.set(long, b"d", b"long")
        assert await storage.get(short, b"c/d") == b"short"
        assert await storage.get(long, b"d") == b"long"
        assert await storage.list_keys(short) == [b"c/d"]
        assert await storage.list_keys(long) == [b"d"]
        assert await storage.get(short, b"d") is None
        assert await storage.get(long, b"c/d") is None
