"""Listing and deleting whole actors: ``list_actors`` and ``delete_actor``.

``list_actors(namespace=None, *, after=None, limit=1000)`` returns the actors
that have at least one stored key, in ``ActorId`` order (namespace, then id,
by code point), strictly after ``after`` (which need not exist), at most
``limit``; a page shorter than ``limit`` is the last. ``delete_actor(actor)``
removes every record of the actor at once; a transaction that read the actor
before the delete fails its commit with ``TransactionConflictError``, also if
the actor was created again meanwhile with as many commits as before
(versions never repeat). A transaction that only wrote never conflicts.

Every test works in namespaces of its own (a unique run id in each), so it can
run against a store full of other data: listings of one namespace are
compared exactly; listings of every namespace (``namespace=None``) are checked
only for this test's own actors (all there, in order, none twice).

A backend written before these methods existed (its ``list_actors`` or
``delete_actor`` is missing or raises ``UnsupportedOperationError``) skips
these tests with that reason: a capability gap, reported, never a pass.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterable, Sequence

import pytest
import pytest_asyncio

from kelpie.errors import (
    InvalidActorIdError,
    StorageClosedError,
    TransactionConflictError,
    UnsupportedOperationError,
)
from kelpie.identity import MAX_ID_PART_BYTES, ActorId
from kelpie.storage import lifecycle
from kelpie.storage.protocol import Storage
from kelpie.testing.conformance._support import COLLIDING_PAIRS, bounded, colliding_pair
from kelpie.testing.plugin import ActorFactory, Reopen

__all__ = ["TestActorLifecycle"]

MANY_ACTORS = 10_000
"""Actors of the paging test."""

_CREATE_AT_ONCE = 500
"""Concurrent one-key commits while creating actors (group commit batches them)."""

_MAX_PAGES = 20_000
"""A listing longer than this never ends: fail rather than hang."""

HOSTILE_PARTS: tuple[str, ...] = (
    "a",
    "a\x00",
    "a\x00b",
    "a\x01",
    "a b",
    "a:b",
    "a/b",
    "{a}",
    "a}",
    "ab",
    "a\x7f",
    "\xe9",  # é: two UTF-8 bytes
    "e\u0301",  # e + combining acute: another string than "é"
    "\xff",
    "\uffff",
    "\U0010ffff",  # the largest code point: four UTF-8 bytes F4 8F BF BF
    "\U0001f600",
    "z" * 40,
)
"""Parts that sort differently by code point, by length, and by a length-prefixed encoding;
several are prefixes of each other ("a", "a\\x00", "a\\x00b")."""


def _namespace(new_actor: ActorFactory, label: str = "lifecycle") -> str:
    """A namespace no other test (or run) uses."""
    return f"{label}-{new_actor.suffix()}"


async def _create(storage: Storage, actors: Iterable[ActorId], key: bytes = b"k") -> None:
    """One one-key commit per actor, many at once."""
    pending = list(actors)
    for start in range(0, len(pending), _CREATE_AT_ONCE):
        chunk = pending[start : start + _CREATE_AT_ONCE]
        await bounded(asyncio.gather(*(storage.set(actor, key, b"v") for actor in chunk)))


async def _list_all(
    storage: Storage, namespace: str | None, *, limit: int, after: ActorId | None = None
) -> list[list[ActorId]]:
    """Every page of a listing, up to and including the first page shorter than ``limit``."""
    pages: list[list[ActorId]] = []
    while len(pages) < _MAX_PAGES:
        page = await bounded(storage.list_actors(namespace, after=after, limit=limit))
        pages.append(page)
        if len(page) < limit:
            return pages
        after = page[-1]
    pytest.fail(f"the listing did not end after {_MAX_PAGES:,} full pages (after={after!r})")


def _flat(pages: Sequence[Sequence[ActorId]]) -> list[ActorId]:
    return [actor for page in pages for actor in page]


def _assert_ascending(actors: Sequence[ActorId]) -> None:
    """Strictly increasing ``ActorId`` order (hence no duplicates)."""
    for before, after in itertools.pairwise(actors):
        assert before < after, f"{after!r} listed after {before!r}"


@pytest.mark.asyncio
class TestActorLifecycle:
    @pytest_asyncio.fixture(autouse=True)
    async def _lifecycle_methods(self, storage: Storage, new_actor: ActorFactory) -> None:
        """Skip, naming the gap, on a backend without ``list_actors``/``delete_actor``.

        A method of the class, so ``from kelpie.testing.conformance import *`` brings it.
        """
        probe = new_actor("probe")  # never written: listing and deleting it change nothing
        try:
            await lifecycle.list_actors(storage, _namespace(new_actor), limit=1)
            await lifecycle.delete_actor(storage, probe)
        except UnsupportedOperationError as exc:
            pytest.skip(str(exc))

    # -- list_actors: order, paging, arguments ----------------------------------------

    async def test_a_namespace_lists_its_actors_in_actor_id_order(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        namespace = _namespace(new_actor)
        actors = [ActorId(namespace, part) for part in HOSTILE_PARTS]
        await _create(storage, reversed(actors))
        await storage.set(ActorId(namespace + "\x00", "a"), b"k", b"v")  # a longer namespace
        listed = await storage.list_actors(namespace)
        assert listed == sorted(actors)
        assert listed == sorted(actors, key=lambda a: a.id.encode())  # code point == UTF-8
        assert await storage.list_actors(namespace, limit=3) == sorted(actors)[:3]

    async def test_paging_by_after_lists_10000_actors_once_each_in_order(
        self, storage: Storage, new_actor: ActorFactory, storage_backend: str
    ) -> None:
        namespace = _namespace(new_actor, "paging")
        # Ids of one to four digits: a length-prefixed encoding sorts them otherwise.
        actors = [ActorId(namespace, str(n)) for n in range(MANY_ACTORS)]
        seed = random.randrange(2**32)
        print(f"seed {seed}")
        random.Random(seed).shuffle(actors)
        started = time.perf_counter()
        await _create(storage, actors)
        created = time.perf_counter()
        expected = sorted(actors)
        for limit in (1000, 777, 1, 10_000):
            if limit == 1:
                # Page by one only over the head: 10,000 calls would make the test slow.
                head = await storage.list_actors(namespace, limit=1)
                second = await storage.list_actors(namespace, after=head[0], limit=1)
                assert head + second == expected[:2]
                continue
            pages = await _list_all(storage, namespace, limit=limit)
            assert _flat(pages) == expected, f"limit {limit}"
            assert all(len(page) == limit for page in pages[:-1])
            assert len(pages[-1]) == MANY_ACTORS % limit  # 0 when limit divides 10,000
        listed = time.perf_counter()
        print(
            f"{storage_backend}: created {MANY_ACTORS:,} actors in {created - started:.2f} s, "
            f"listed them 3 times in {listed - created:.2f} s"
        )
        assert await storage.list_actors(namespace, after=expected[-1]) == []

    async def test_after_may_name_a_deleted_or_never_written_actor(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        namespace = _namespace(new_actor)
        a, b, c, d = (ActorId(namespace, name) for name in ("a", "b", "c", "d"))
        await _create(storage, (a, b, c, d))
        await storage.delete_actor(b)
        assert await storage.list_actors(namespace) == [a, c, d]
        assert await storage.list_actors(namespace, after=b) == [c, d]
        assert await storage.list_actors(namespace, after=ActorId(namespace, "b\x00")) == [c, d]
        assert await storage.list_actors(namespace, after=ActorId(namespace, "bz")) == [c, d]
        assert await storage.list_actors(namespace, after=ActorId(namespace, "\x00")) == [a, c, d]
        assert await storage.list_actors(namespace, after=d) == []
        assert await storage.list_actors(namespace, after=ActorId(namespace, "zz")) == []
        # An after in another namespace: everything of this one, or nothing.
        assert await storage.list_actors(namespace, after=ActorId(namespace[:-1], "z")) == [a, c, d]
        assert await storage.list_actors(namespace, after=ActorId(namespace + "\x00", "a")) == []

    async def test_bad_list_arguments_raise_before_anything_is_read(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        namespace = _namespace(new_actor)
        actor = ActorId(namespace, "a")
        await storage.set(actor, b"k", b"v")
        for limit in (0, -1, 100_001):
            with pytest.raises(ValueError):
                await storage.list_actors(namespace, limit=limit)
        for bad_limit in ("10", 1.5, None, True):
            with pytest.raises(TypeError):
                await storage.list_actors(namespace, limit=bad_limit)  # type: ignore[arg-type]
        with pytest.raises(InvalidActorIdError):
            await storage.list_actors("")
        with pytest.raises(InvalidActorIdError):
            await storage.list_actors("n" * (MAX_ID_PART_BYTES + 1))
        with pytest.raises(TypeError):
            await storage.list_actors(b"ns")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await storage.list_actors(namespace, after="a")  # type: ignore[arg-type]
        # The largest page a backend must accept, and the smallest.
        assert await storage.list_actors(namespace, limit=100_000) == [actor]
        assert await storage.list_actors(namespace, limit=1) == [actor]

    async def test_hostile_namespaces_list_apart_and_in_order_in_every_namespace_listing(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        run = _namespace(new_actor, "hostile")
        # Namespaces that are prefixes of each other ("…a", "…a\x00"), and ids likewise.
        namespaces = [run + part for part in HOSTILE_PARTS]
        namespaces.append(run + "\xfc" * ((MAX_ID_PART_BYTES - len(run.encode())) // 2))
        ids = [*HOSTILE_PARTS, "\xfc" * (MAX_ID_PART_BYTES // 2)]
        actors = [ActorId(ns, ident) for ns in namespaces for ident in ids]
        await _create(storage, actors)
        for ns in namespaces:
            assert await storage.list_actors(ns) == sorted(ActorId(ns, i) for i in ids), ns
            assert await storage.list_actors(ns, after=ActorId(ns, "a")) == sorted(
                ActorId(ns, i) for i in ids if i > "a"
            )
        # Every namespace: start just below this test's range (the run prefix sorts first).
        mine = set(actors)
        seen: list[ActorId] = []
        after: ActorId | None = ActorId(run, "\x00")
        while after is not None:
            page = await storage.list_actors(after=after, limit=50)
            _assert_ascending(page)
            seen.extend(page)
            past = page and not page[-1].namespace.startswith(run)
            after = None if past or len(page) < 50 else page[-1]
        own = [actor for actor in seen if actor in mine]
        assert own == sorted(actors)
        _assert_ascending(seen)
        # From the very start of the store: a first page in order.
        first = await storage.list_actors(limit=20)
        _assert_ascending(first)
        assert 1 <= len(first) <= 20

    async def test_an_actor_whose_keys_were_all_deleted_is_not_listed(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        namespace = _namespace(new_actor)
        emptied, emptied_in_one, kept = (ActorId(namespace, n) for n in ("e1", "e2", "k"))
        new_actor.track(emptied, emptied_in_one, kept, ActorId(namespace, "deletes-only"))
        await storage.set(emptied, b"k", b"v")
        await storage.delete(emptied, b"k")
        async with storage.transaction(emptied_in_one) as txn:
            await txn.set(b"a", b"1")
            await txn.set(b"b", b"2")
        async with storage.transaction(emptied_in_one) as txn:
            assert await txn.list_keys() == [b"a", b"b"]
            await txn.delete(b"a")
            await txn.delete(b"b")
        await storage.set(kept, b"k", b"v")
        async with storage.transaction(ActorId(namespace, "deletes-only")) as txn:
            await txn.delete(b"never-written")
        assert await storage.list_actors(namespace) == [kept]
        await storage.set(emptied, b"again", b"v")  # and it comes back with a key
        assert await storage.list_actors(namespace) == [emptied, kept]

    async def test_pages_taken_during_concurrent_writes_list_no_actor_twice_and_miss_no_stable_one(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        namespace = _namespace(new_actor, "churn")
        stable = [ActorId(namespace, f"s{n:03d}") for n in range(300)]
        await _create(storage, stable)
        seed = random.randrange(2**32)
        print(f"seed {seed}")
        rng = random.Random(seed)
        done = asyncio.Event()
        churned = 0

        async def churn(writer: int) -> None:
            nonlocal churned
            while not done.is_set():
                # New actors sorting between and around the stable ones; some deleted again.
                fresh = ActorId(namespace, f"s{rng.randrange(310):03d}-{writer}-{churned}")
                await storage.set(fresh, b"k", b"v")
                await storage.set(rng.choice(stable), b"k", b"%d" % churned)  # stable: keep keys
                if rng.random() < 0.5:
                    await storage.delete_actor(fresh)
                churned += 1
                await asyncio.sleep(0)

        writers = [asyncio.create_task(churn(n)) for n in range(4)]
        try:
            pages = await _list_all(storage, namespace, limit=7)
        finally:
            done.set()
            await bounded(asyncio.gather(*writers))
        listed = _flat(pages)
        _assert_ascending(listed)  # no id twice, across pages too
        assert set(stable) <= set(listed)
        assert churned > 0

    # -- delete_actor -----------------------------------------------------------------

    @pytest.mark.parametrize("pair", COLLIDING_PAIRS)
    async def test_delete_actor_removes_every_key_and_nothing_of_another_actor(
        self, storage: Storage, new_actor: ActorFactory, pair: str
    ) -> None:
        doomed, neighbour = colliding_pair(pair, new_actor.suffix())
        async with storage.transaction(doomed) as txn:
            for b in range(256):
                await txn.set(bytes([b]), b"x" * b)
            await txn.set(b"\xff" * 256, b"")
        await storage.set(neighbour, b"\x00", b"kept")
        await storage.delete_actor(doomed)
        assert await storage.list_keys(doomed) == []
        for b in range(256):
            assert await storage.get(doomed, bytes([b])) is None
        assert await storage.get(doomed, b"\xff" * 256) is None
        async with storage.transaction(doomed) as txn:
            assert await txn.list_keys() == []
        assert doomed not in await storage.list_actors(doomed.namespace)
        assert await storage.list_keys(neighbour) == [b"\x00"]
        assert await storage.get(neighbour, b"\x00") == b"kept"
        assert neighbour in await storage.list_actors(neighbour.namespace)

    async def test_deleting_an_absent_actor_does_nothing(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        namespace = _namespace(new_actor)
        present, absent = ActorId(namespace, "present"), ActorId(namespace, "absent")
        await storage.set(present, b"k", b"v")
        await storage.delete_actor(absent)
        await storage.delete_actor(absent)
        await storage.delete_actor(present)
        await storage.delete_actor(present)  # twice: the second finds nothing
        assert await storage.list_actors(namespace) == []
        assert await storage.list_keys(absent) == []
        await storage.set(absent, b"k", b"v")  # and the ids stay usable
        assert await storage.list_actors(namespace) == [absent]

    async def test_a_transaction_that_read_before_a_delete_fails_its_commit(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("read-then-deleted")
        await storage.set(actor, b"a", b"1")
        for read in ("get", "list_keys"):
            txn = storage.transaction(actor)
            if read == "get":
                assert await txn.get(b"a") == b"1"
            else:
                assert await txn.list_keys() == [b"a"]
            await storage.delete_actor(actor)
            await txn.set(b"b", b"stale")
            with pytest.raises(TransactionConflictError):
                await txn.commit()
            assert await storage.list_keys(actor) == []  # nothing of it was written
            assert actor not in await storage.list_actors(actor.namespace)
            await storage.set(actor, b"a", b"1")

    async def test_a_read_only_transaction_that_read_before_a_delete_fails_its_commit(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("read-only-then-deleted")
        await storage.set(actor, b"a", b"1")
        txn = storage.transaction(actor)
        assert await txn.get(b"a") == b"1"
        await storage.delete_actor(actor)
        with pytest.raises(TransactionConflictError):
            await txn.commit()
        # A read that sees the delete mixes two versions: the commit fails too.
        await storage.set(actor, b"a", b"1")
        await storage.set(actor, b"b", b"1")
        async with storage.transaction(actor) as torn:
            assert await torn.get(b"a") == b"1"
            await storage.delete_actor(actor)
            assert await torn.get(b"b") is None
            with pytest.raises(TransactionConflictError):
                await torn.commit()

    async def test_a_transaction_that_read_an_absent_actor_conflicts_with_its_create_and_delete(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("absent-then-churned")
        txn = storage.transaction(actor)
        assert await txn.get(b"a") is None
        await storage.set(actor, b"a", b"created meanwhile")
        await storage.delete_actor(actor)
        await txn.set(b"a", b"stale")
        with pytest.raises(TransactionConflictError):
            await txn.commit()
        assert await storage.list_keys(actor) == []

    async def test_delete_then_recreate_with_as_many_commits_still_fails_a_stale_transaction(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        for commits in (1, 3):
            actor = new_actor(f"recreated-{commits}")
            for n in range(commits):
                await storage.set(actor, b"n", b"%d" % n)
            stale = storage.transaction(actor)
            assert await stale.get(b"n") == b"%d" % (commits - 1)
            read_only = storage.transaction(actor)
            assert await read_only.list_keys() == [b"n"]
            await storage.delete_actor(actor)
            for n in range(commits):  # the same commits again: same keys, same values
                await storage.set(actor, b"n", b"%d" % n)
            await stale.set(b"n", b"stale")
            with pytest.raises(TransactionConflictError):
                await stale.commit()
            with pytest.raises(TransactionConflictError):
                await read_only.commit()
            assert await storage.get(actor, b"n") == b"%d" % (commits - 1)

    async def test_a_write_only_transaction_never_conflicts_with_a_delete(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("write-only")
        await storage.set(actor, b"old", b"1")
        txn = storage.transaction(actor)
        await txn.set(b"new", b"2")  # buffered before the delete, committed after it
        await storage.delete_actor(actor)
        await txn.commit()
        assert await storage.list_keys(actor) == [b"new"]  # nothing of before comes back
        assert await storage.get(actor, b"old") is None
        assert actor in await storage.list_actors(actor.namespace)

    async def test_a_delete_is_durable_and_seen_by_another_storage_on_the_same_store(
        self, storage: Storage, open_storage_again: Reopen, new_actor: ActorFactory
    ) -> None:
        namespace = _namespace(new_actor, "durable-delete")
        doomed, kept = ActorId(namespace, "doomed"), ActorId(namespace, "kept")
        await storage.set(doomed, b"k", b"v")
        await storage.set(kept, b"k", b"v")
        other = await open_storage_again()  # like a second process
        stale = other.transaction(doomed)
        assert await stale.get(b"k") == b"v"
        await storage.delete_actor(doomed)
        assert await other.list_keys(doomed) == []
        assert await other.list_actors(namespace) == [kept]
        await stale.set(b"k", b"stale")
        with pytest.raises(TransactionConflictError):
            await stale.commit()
        await storage.close()
        await other.close()
        reopened = await open_storage_again()
        assert await reopened.list_actors(namespace) == [kept]
        assert await reopened.list_keys(doomed) == []
        assert await reopened.get(doomed, b"k") is None
        await reopened.set(doomed, b"k", b"reborn")
        assert await reopened.list_actors(namespace) == [doomed, kept]

    async def test_list_actors_and_delete_actor_raise_storage_closed_after_close(
        self, storage: Storage, new_actor: ActorFactory
    ) -> None:
        actor = new_actor("closed")
        await storage.set(actor, b"k", b"v")
        await storage.close()
        with pytest.raises(StorageClosedError):
            await storage.list_actors()
        with pytest.raises(StorageClosedError):
            await storage.list_actors(actor.namespace, after=actor, limit=5)
        with pytest.raises(StorageClosedError):
            await storage.delete_actor(actor)
