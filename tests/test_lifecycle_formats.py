"""Stores written before ``list_actors``/``delete_actor`` existed list and delete as new ones.

The LMDB and SQLite layouts did not change (ADR 0013): these tests build a
store exactly as the previous release wrote it -- with the ``lmdb`` and
``sqlite3`` libraries directly, following ADR 0001 and docs/backends/sqlite.md
-- then open it with kelpie, list and delete, and look at the raw store again:
nothing of a deleted actor is left, and the only new records are the one
store-wide ``deletes`` counter and what lets a listing skip emptied actors
without a probe per actor (LMDB: the ``empty_marks`` flag and one mark per
emptied actor; SQLite: the ``kelpie_empty`` table and its triggers).
Those marks are checked here too: kept by every later commit and delete, by
an earlier release's writes on SQLite (triggers), and never hiding an actor
that has records.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import lmdb
import pytest

from kelpie.errors import TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage.protocol import Storage
from kelpie.storage.registry import open_storage

_ENTRY = struct.Struct(">QQ")
_NUMBER = struct.Struct(">Q")

# (actor, version, keys): "b/emptied" has a version entry but no key left.
OLD_ACTORS: tuple[tuple[ActorId, int, tuple[bytes, ...]], ...] = (
    (ActorId("b", "10"), 3, (b"k", b"state")),
    (ActorId("b", "9"), 1, (b"k",)),
    (ActorId("aa", "x"), 7, (b"\x00", b"\xff" * 3)),
    (ActorId("a\x00", "\U0010ffff"), 2, (b"k",)),
    (ActorId("b", "emptied"), 4, ()),
)
LISTED = sorted(actor for actor, _, keys in OLD_ACTORS if keys)


def _write_old_lmdb(directory: Path) -> None:
    env = lmdb.open(str(directory), subdir=True, max_dbs=3, map_size=2**24)
    try:
        with env.begin(write=True) as txn:
            meta = env.open_db(b"meta", txn=txn)
            actors = env.open_db(b"actors", txn=txn)
            records = env.open_db(b"records", txn=txn)
            txn.put(b"format", b"1", db=meta)
            txn.put(b"next_actor", _NUMBER.pack(len(OLD_ACTORS) + 1), db=meta)
            for number, (actor, version, keys) in enumerate(OLD_ACTORS, start=1):
                txn.put(actor.encode(), _ENTRY.pack(number, version), db=actors)
                for key in keys:
                    txn.put(_NUMBER.pack(number) + key, b"old " + key, db=records)
    finally:
        env.close()


def _raw_lmdb(directory: Path) -> tuple[dict[bytes, bytes], dict[bytes, bytes], dict[bytes, bytes]]:
    env = lmdb.open(str(directory), subdir=True, max_dbs=3, readonly=True, lock=False)
    try:
        dbs = [env.open_db(name) for name in (b"meta", b"actors", b"records")]
        with env.begin() as txn:
            meta, actors, records = (dict(txn.cursor(db=db).iternext()) for db in dbs)
    finally:
        env.close()
    return meta, actors, records


_OLD_SQLITE_SCHEMA = """
CREATE TABLE kelpie_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE kelpie_records (
    actor BLOB NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (actor, key)
);
CREATE TABLE kelpie_versions (actor BLOB PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO kelpie_meta (name, value) VALUES ('schema_version', 1);
"""


def _write_old_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(_OLD_SQLITE_SCHEMA)
        for actor, version, keys in OLD_ACTORS:
            db.execute("INSERT INTO kelpie_versions VALUES (?, ?)", (actor.encode(), version))
            for key in keys:
                db.execute(
                    "INSERT INTO kelpie_records VALUES (?, ?, ?)",
                    (actor.encode(), key, b"old " + key),
                )
        db.commit()
    finally:
        db.close()


def _raw_sqlite(path: Path) -> tuple[dict[str, int], dict[bytes, int], set[bytes]]:
    db = sqlite3.connect(path)
    try:
        meta = dict(db.execute("SELECT name, value FROM kelpie_meta"))
        versions = {
            bytes(a): v for a, v in db.execute("SELECT actor, version FROM kelpie_versions")
        }
        records = {bytes(a) for (a,) in db.execute("SELECT DISTINCT actor FROM kelpie_records")}
    finally:
        db.close()
    return meta, versions, records


async def _list_delete_and_recreate(storage: Storage) -> None:
    assert await storage.list_actors() == LISTED
    assert await storage.list_actors("b") == [ActorId("b", "10"), ActorId("b", "9")]
    assert await storage.list_actors(after=ActorId("aa", "x"), limit=1) == [ActorId("b", "10")]
    doomed = ActorId("b", "10")
    assert await storage.get(doomed, b"state") == b"old state"
    stale = storage.transaction(doomed)
    assert await stale.get(b"k") == b"old k"
    await storage.delete_actor(doomed)
    await storage.delete_actor(ActorId("b", "emptied"))  # a version entry, no key
    for _ in range(3):  # as many commits as the old actor had
        await storage.set(doomed, b"k", b"new")
    await stale.set(b"k", b"stale")
    with pytest.raises(TransactionConflictError):
        await stale.commit()
    await storage.delete_actor(doomed)
    assert await storage.list_actors() == [a for a in LISTED if a != doomed]
    assert await storage.list_keys(doomed) == []


async def test_an_lmdb_store_of_the_previous_release_lists_and_deletes(tmp_path: Path) -> None:
    directory = tmp_path / "old-lmdb"
    _write_old_lmdb(directory)
    storage = open_storage(f"lmdb://{directory}")
    try:
        await _list_delete_and_recreate(storage)
    finally:
        await storage.close()
    meta, actors, records = _raw_lmdb(directory)
    # One counter, no tombstone; every emptied actor is marked (none is left: it was deleted).
    assert set(meta) == {b"format", b"next_actor", b"deletes", b"empty_marks"}
    assert meta[b"format"] == b"1"
    assert ActorId("b", "10").encode() not in actors
    assert ActorId("b", "emptied").encode() not in actors
    numbers = {_ENTRY.unpack(raw)[0] for raw in actors.values()}
    assert {key[:8] for key in records} == {_NUMBER.pack(n) for n in numbers}
    # Above the highest version any deleted actor had (4, and 3 after it was re-created).
    assert _NUMBER.unpack(meta[b"deletes"])[0] > 4


async def test_a_sqlite_file_of_the_previous_release_lists_and_deletes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _write_old_sqlite(path)
    storage = open_storage(f"sqlite://{path}")
    try:
        await _list_delete_and_recreate(storage)
    finally:
        await storage.close()
    meta, versions, records = _raw_sqlite(path)
    assert set(meta) == {"schema_version", "deletes"}
    assert meta["schema_version"] == 1
    assert ActorId("b", "10").encode() not in versions
    assert ActorId("b", "emptied").encode() not in versions
    assert records == {a.encode() for a in LISTED if a != ActorId("b", "10")}
    assert meta["deletes"] > 4


async def _empty_refill_and_delete(storage: Storage) -> None:
    """Emptied actors leave the listing, come back when written, and deletes clear them."""
    kept, emptied = ActorId("m", "kept"), ActorId("m", "emptied")
    for actor in (kept, emptied):
        await storage.set(actor, b"a", b"1")
        await storage.set(actor, b"b", b"2")
    await storage.delete(emptied, b"a")
    assert await storage.list_actors("m") == [emptied, kept]  # one key left
    await storage.delete(emptied, b"b")
    assert await storage.list_actors("m") == [kept]
    await storage.set(emptied, b"c", b"3")
    assert await storage.list_actors("m") == [emptied, kept]
    await storage.delete(emptied, b"c")
    await storage.delete_actor(emptied)
    assert await storage.list_actors("m") == [kept]
    await storage.set(emptied, b"d", b"4")
    assert await storage.list_actors("m") == [emptied, kept]


async def test_lmdb_marks_follow_commits_and_never_hide_an_actor_with_records(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "marks-lmdb"
    storage = open_storage(f"lmdb://{directory}")
    try:
        await _empty_refill_and_delete(storage)
        await storage.delete(ActorId("m", "kept"), b"a")
        await storage.delete(ActorId("m", "kept"), b"b")  # emptied: marked
        refilled = ActorId("n", "refilled")
        await storage.set(refilled, b"a", b"1")
        await storage.delete(refilled, b"a")  # marked ...
        await storage.set(refilled, b"b", b"2")  # ... and unmarked: marks stay few
    finally:
        await storage.close()
    meta, _, _ = _raw_lmdb(directory)
    marks = {key for key in meta if key.startswith(b"\x00")}
    assert marks == {b"\x00empty:" + ActorId("m", "kept").encode()}
    # A mark whose actor has records again (an earlier release wrote it): still listed.
    env = lmdb.open(str(directory), subdir=True, max_dbs=3)
    try:
        with env.begin(write=True) as txn:
            actors, records = env.open_db(b"actors", txn=txn), env.open_db(b"records", txn=txn)
            entry = txn.get(ActorId("m", "kept").encode(), db=actors)
            assert entry is not None
            number = _ENTRY.unpack(entry)[0]
            txn.put(_NUMBER.pack(number) + b"old", b"written by 0.1", db=records)
    finally:
        env.close()
    storage = open_storage(f"lmdb://{directory}")
    try:
        assert await storage.list_actors("m") == [ActorId("m", "emptied"), ActorId("m", "kept")]
    finally:
        await storage.close()


async def test_sqlite_marks_follow_commits_and_an_earlier_release_s_writes(tmp_path: Path) -> None:
    path = tmp_path / "marks.db"
    storage = open_storage(f"sqlite://{path}")
    try:
        await _empty_refill_and_delete(storage)
    finally:
        await storage.close()
    # An earlier release knows nothing of kelpie_empty: its plain statements
    # still keep it, through the triggers.
    kept = ActorId("m", "kept").encode()
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute("DELETE FROM kelpie_records WHERE actor = ?", (kept,))
            db.execute("UPDATE kelpie_versions SET version = version + 1 WHERE actor = ?", (kept,))
        assert db.execute("SELECT actor FROM kelpie_empty").fetchall() == [(kept,)]
    finally:
        db.close()
    storage = open_storage(f"sqlite://{path}")
    try:
        assert await storage.list_actors("m") == [ActorId("m", "emptied")]
        await storage.set(ActorId("m", "kept"), b"k", b"v")
        assert await storage.list_actors("m") == [ActorId("m", "emptied"), ActorId("m", "kept")]
    finally:
        await storage.close()
