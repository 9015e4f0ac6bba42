"""``list_actors`` on the embedded backends against a model: ``sorted()`` of a set of ids.

LMDB and SQLite list from tables sorted by the length-prefixed
``ActorId.encode()`` and merge ranges into ``ActorId`` order
(``kelpie.storage.encoded_order``); memory keeps a sorted index. Hypothesis
draws ids from a small alphabet of awkward characters (NUL, 0xFF, a
four-byte code point, prefixes of each other, many lengths), writes and
deletes them, and checks every listing -- any namespace or all, any
``after`` (stored, deleted or never written), any limit -- against the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pickle
import sqlite3
import uuid
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kelpie.errors import CorruptStateError, InvalidActorIdError
from kelpie.identity import ActorId
from kelpie.storage.protocol import Storage
from kelpie.storage.registry import open_storage

_CHARS = ("a", "b", "\x00", "\x7f", "\xff", "\u00e9", "\U0010ffff")
_parts = st.text(alphabet=st.sampled_from(_CHARS), min_size=1, max_size=4)
_actors = st.builds(ActorId, st.sampled_from(["a", "a\x00", "b", "\xff", "aa"]), _parts)
_queries = st.tuples(
    st.one_of(st.none(), st.sampled_from(["a", "a\x00", "b", "\xff", "aa", "c"])),
    st.one_of(st.none(), _actors),
    st.integers(min_value=1, max_value=6),
)


def _model(
    actors: set[ActorId], namespace: str | None, after: ActorId | None, limit: int
) -> list[ActorId]:
    chosen = sorted(
        a
        for a in actors
        if (namespace is None or a.namespace == namespace) and (after is None or a > after)
    )
    return chosen[:limit]


async def _check(
    storage: Storage,
    written: list[ActorId],
    deleted: list[ActorId],
    emptied: list[ActorId],
    queries: list[tuple[str | None, ActorId | None, int]],
) -> None:
    await asyncio.gather(*(storage.set(actor, b"k", b"v") for actor in written))
    for actor in emptied:
        await storage.delete(actor, b"k")
    for actor in deleted:
        await storage.delete_actor(actor)
    model = set(written) - set(deleted) - set(emptied)
    for namespace, after, limit in queries:
        got = await storage.list_actors(namespace, after=after, limit=limit)
        assert got == _model(model, namespace, after, limit), (namespace, after, limit)
    # Paging through everything by the last id of each page.
    pages: list[ActorId] = []
    after = None
    for _ in range(len(model) + 2):  # a listing that never ends fails, not hangs
        page = await storage.list_actors(after=after, limit=3)
        pages.extend(page)
        if len(page) < 3:
            break
        after = page[-1]
    assert pages == sorted(model)


@pytest.mark.parametrize("backend", ["memory", "lmdb", "sqlite"])
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    written=st.lists(_actors, max_size=40, unique=True),
    deleted=st.data(),
    queries=st.lists(_queries, min_size=1, max_size=8),
)
def test_list_actors_matches_a_sorted_model(
    tmp_path: Path,
    backend: str,
    written: list[ActorId],
    deleted: st.DataObject,
    queries: list[tuple[str | None, ActorId | None, int]],
) -> None:
    gone = deleted.draw(st.lists(st.sampled_from(written), unique=True)) if written else []
    rest = [a for a in written if a not in gone]
    emptied = deleted.draw(st.lists(st.sampled_from(rest), unique=True)) if rest else []
    name = uuid.uuid4().hex
    url = {
        "memory": "memory://",
        "lmdb": f"lmdb://{tmp_path / name}",
        "sqlite": f"sqlite://{tmp_path / name}.db",
    }[backend]

    async def run() -> None:
        storage = open_storage(url)
        try:
            await _check(storage, written, gone, emptied, queries)
        finally:
            await storage.close()

    asyncio.run(run())


_any_part = st.text(min_size=1, max_size=32).filter(
    lambda t: len(t.encode("utf-8", "replace")) <= 128
)


@settings(max_examples=300, deadline=None, database=None)
@given(namespace=_any_part, ident=_any_part)
def test_an_encoded_actor_id_decodes_to_the_same_id(namespace: str, ident: str) -> None:
    """``ActorId.decode`` (what listings rebuild ids with) inverts ``encode`` exactly."""
    try:
        actor = ActorId(namespace, ident)
    except InvalidActorIdError:
        return  # a lone surrogate: not an id at all
    decoded = ActorId.decode(actor.encode())
    assert decoded == actor
    assert hash(decoded) == hash(actor)
    assert decoded.encode() == actor.encode()


@pytest.mark.parametrize(
    "encoded",
    [
        b"",
        b"\x00",
        b"\x01a",
        b"\x01a\x00",
        b"\x01a\x02b",
        b"\x01a\x01bc",
        b"\x00\x01b",
        b"\x01\xff\x01b",  # not UTF-8
        b"\x81" + b"a" * 129 + b"\x01b",  # a part past 128 bytes
    ],
)
def test_bytes_that_no_actor_id_encodes_to_do_not_decode(encoded: bytes) -> None:
    with pytest.raises(InvalidActorIdError):
        ActorId.decode(encoded)


@settings(max_examples=200, deadline=None, database=None)
@given(namespace=_any_part, idents=st.lists(_any_part, max_size=8))
def test_ids_built_in_bulk_are_constructed_ids(namespace: str, idents: list[str]) -> None:
    """``ActorId._trusted_many`` (what listings build ids with) makes ids that equal,
    hash, encode, print, order and pickle exactly as constructed ones."""
    try:
        actors = [ActorId(namespace, ident) for ident in idents]
    except InvalidActorIdError:
        return  # a lone surrogate: not an id at all
    built = ActorId._trusted_many(namespace, idents)
    assert built == actors
    for made, actor in zip(built, actors, strict=True):
        assert type(made) is ActorId
        assert hash(made) == hash(actor)
        assert made.encode() == actor.encode()
        assert (repr(made), str(made)) == (repr(actor), str(actor))
        assert pickle.loads(pickle.dumps(made)) == actor
        assert {made: 1}[actor] == 1
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.id = "x"  # type: ignore[misc]
    assert sorted(built, reverse=True) == sorted(actors, reverse=True)


@pytest.mark.parametrize("backend", ["memory", "lmdb", "sqlite"])
def test_big_pages_list_in_order(tmp_path: Path, backend: str) -> None:
    """Pages larger than the backends' read-ahead steps, over ids of several lengths
    (several merged runs) in several namespaces, page by page from ``after``."""
    actors = [
        ActorId(namespace, f"{n % 997}" + "x" * (n % 3))
        for namespace in ("n", "nn", "\xff")
        for n in range(2500)
    ]
    model = sorted(set(actors))
    url = {
        "memory": "memory://",
        "lmdb": f"lmdb://{tmp_path / 'l'}",
        "sqlite": f"sqlite://{tmp_path / 's.db'}",
    }[backend]

    async def pages(namespace: str | None, limit: int) -> list[ActorId]:
        listed: list[ActorId] = []
        after = None
        while True:
            page = await storage.list_actors(namespace, after=after, limit=limit)
            listed += page
            if len(page) < limit:
                return listed
            after = page[-1]

    async def run() -> None:
        try:
            await check()
        finally:
            await storage.close()

    async def check() -> None:
        await asyncio.gather(*(storage.set(actor, b"k", b"v") for actor in set(actors)))
        for emptied in model[::7]:
            await storage.delete(emptied, b"k")
        rest = [a for i, a in enumerate(model) if i % 7]
        for limit in (1000, 4999, 10_000):
            assert await pages(None, limit) == rest
        assert await pages("nn", 333) == [a for a in rest if a.namespace == "nn"]
        assert await storage.list_actors(after=rest[100], limit=5000) == rest[101:5101]

    storage = open_storage(url)
    asyncio.run(run())


@pytest.mark.parametrize("damage", [b"\x01n\x02\xff\xfe", b"\x01n\x01ab", b"\x01n\x02a"])
@pytest.mark.parametrize("backend", ["lmdb", "sqlite"])
async def test_a_damaged_stored_id_is_corrupt_state(
    tmp_path: Path, backend: str, damage: bytes
) -> None:
    """An actor-table key that no ``ActorId`` encodes to (bad UTF-8, a length byte
    that disagrees with the id) fails the listing that reaches it."""
    url = f"lmdb://{tmp_path / 'l'}" if backend == "lmdb" else f"sqlite://{tmp_path / 's.db'}"
    storage = open_storage(url)
    await storage.set(ActorId("n", "a"), b"k", b"v")
    await storage.close()
    if backend == "lmdb":
        env = lmdb.open(str(tmp_path / "l"), max_dbs=3)
        try:
            with env.begin(write=True) as txn:
                actors = env.open_db(b"actors", txn=txn)
                entry = txn.get(ActorId("n", "a").encode(), db=actors)
                assert entry is not None
                txn.put(damage, entry, db=actors)  # the same actor number: it has a record
        finally:
            env.close()
    else:
        with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as db, db:
            db.execute("INSERT INTO kelpie_versions VALUES (?, 1)", (damage,))
            db.execute("INSERT INTO kelpie_records VALUES (?, ?, ?)", (damage, b"k", b"v"))
    storage = open_storage(url)
    try:
        with pytest.raises(CorruptStateError):
            await storage.list_actors()
        with pytest.raises(CorruptStateError):
            await storage.list_actors("n")
        assert await storage.list_actors("m") == []
    finally:
        await storage.close()


@settings(max_examples=200, deadline=None, database=None)
@given(namespace=_any_part, idents=st.lists(_any_part, max_size=8))
def test_ids_decoded_in_bulk_are_constructed_ids(namespace: str, idents: list[str]) -> None:
    """``ActorId._decode_many`` (Redis and PostgreSQL listings) checks in bulk what the
    constructor checks, and builds equal ids."""
    try:
        actors = [ActorId(namespace, ident) for ident in idents]
    except InvalidActorIdError:
        return  # a lone surrogate: not an id at all
    built = ActorId._decode_many(namespace.encode(), [ident.encode() for ident in idents])
    assert built == actors
    assert [hash(a) for a in built] == [hash(a) for a in actors]
    assert [a.encode() for a in built] == [a.encode() for a in actors]


@pytest.mark.parametrize(
    ("namespace", "ids"),
    [
        (b"", [b"a"]),
        (b"n" * 129, [b"a"]),
        (b"ns", [b"a", b""]),
        (b"ns", [b"a", b"b" * 129]),
        (b"ns", [b"a", b"\xff"]),
        (b"\xc3", [b"a"]),
    ],
)
def test_bulk_decoding_refuses_what_the_constructor_refuses(
    namespace: bytes, ids: list[bytes]
) -> None:
    with pytest.raises(InvalidActorIdError):
        ActorId._decode_many(namespace, ids)
