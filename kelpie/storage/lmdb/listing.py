"""``list_actors`` on LMDB: the ``actors`` database read in runs, minus the emptied actors.

An actor's entry stays when a commit deletes its last record (its version must
go on, ADR 0013), but such an actor is not listed. Rather than seek the
``records`` database once per listed actor, the writer keeps a mark
(``meta`` key ``_EMPTY`` + the encoded id) on every actor whose entry has no
record: a commit that leaves its actor without a record puts it, a commit that
writes a record to it (and ``delete_actor``) removes it. A page reads the
actors' keys only -- in C, never a value -- and checks just the marked actors
of its range. A mark whose actor has records again (written by an earlier
release, which knows nothing of marks) hides nothing: a marked actor is listed
unless its records really are gone.

``empty_marks`` in ``meta`` says every empty actor is marked. A new store is
created with it; a store written by an earlier release gets its marks in one
write transaction (one seek per actor) the first time it is listed. An earlier
release that empties an actor afterwards leaves it unmarked: that actor is
listed (with no key) until it is written or deleted by this release.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterator
from itertools import chain, islice, takewhile
from typing import cast

import lmdb

from kelpie.storage.lmdb.env import EMPTY_MARKS as MARKED
from kelpie.storage.lmdb.env import SharedEnv, Txn, WriteTxn

__all__ = ["MARKED", "ActorIndex", "MarkEmptyActors", "after_commit", "is_marked", "unmark"]

_NUMBER = struct.Struct(">Q")

_EMPTY = b"\x00empty:"
"""Marks: ``_EMPTY`` + encoded id. The NUL keeps them apart from the counters' names."""


def _has_records(records: lmdb.Cursor, prefix: bytes) -> bool:
    """True when the ``records`` cursor finds a key starting with the actor's ``prefix``."""
    return bool(records.set_range(prefix)) and cast(bytes, records.key()).startswith(prefix)


def after_commit(w: WriteTxn, env: SharedEnv, encoded: bytes, prefix: bytes, wrote: bool) -> None:
    """Keep the actor's mark right after a commit wrote its records.

    ``wrote``: the commit put at least one record (the actor has one now);
    otherwise it only deleted records (or none), and one seek tells whether any
    is left.
    """
    if wrote:
        w.txn.delete(_EMPTY + encoded, db=env.meta)
    elif not _has_records(w.records, prefix):
        w.txn.put(_EMPTY + encoded, b"", db=env.meta)


def unmark(w: WriteTxn, env: SharedEnv, encoded: bytes) -> None:
    """Remove the actor's mark (its entry is being deleted)."""
    w.txn.delete(_EMPTY + encoded, db=env.meta)


def is_marked(env: SharedEnv, txn: Txn) -> bool:
    """True when every empty actor of the store is marked (``empty_marks``)."""
    return txn.get(MARKED, db=env.meta) is not None


class MarkEmptyActors:
    """A ``WriteJob`` marking every actor with no record, once per store (then ``empty_marks``).

    For stores written by an earlier release; one seek per actor, in one write
    transaction, so no commit of this release interleaves.
    """

    size_hint = 1 << 20

    def __init__(self, env: SharedEnv) -> None:
        self._env = env

    def check(self, w: WriteTxn) -> None:
        return None

    def write(self, w: WriteTxn) -> None:
        env = self._env
        if is_marked(env, w.txn):
            return  # another process marked the store first
        empty = []
        for encoded, entry in w.txn.cursor(db=env.actors).iternext():
            if not _has_records(w.records, entry[: _NUMBER.size]):
                empty.append(encoded)
        for encoded in empty:
            w.txn.put(_EMPTY + encoded, b"", db=env.meta)
        w.txn.put(MARKED, b"1", db=env.meta)


class ActorIndex:
    """The ``actors`` database in one read snapshot, as ``list_encoded`` reads it."""

    def __init__(self, env: SharedEnv, txn: Txn) -> None:
        self._txn = txn
        self._env = env
        self._seek = txn.cursor(db=env.actors)
        self._marks = txn.cursor(db=env.meta)
        self._records = txn.cursor(db=env.records)

    def first_from(self, key: bytes) -> bytes | None:
        cursor = self._seek
        return cursor.key() if cursor.set_range(key) else None

    def scan(self, start: bytes, stop: bytes, first: int) -> Iterator[bytes]:
        return chain.from_iterable(self._chunks(start, stop, first))

    def _chunks(self, start: bytes, stop: bytes, first: int) -> Iterator[list[bytes]]:
        """The listed ids of ``[start, stop)`` in lists of ``first``, then growing sizes.

        Each list is cut from the cursor in C (keys only; the one that reaches
        ``stop`` is cut there by bisection); the consumer steps through it in
        C, and reads ahead at most one list.
        """
        actors = self._txn.cursor(db=self._env.actors)
        if not actors.set_range(start):
            return
        keys = actors.iternext(values=False)
        size = first
        while chunk := list(islice(keys, size)):
            if chunk[-1] >= stop:  # the range ends in this chunk: cut it there
                del chunk[bisect_left(chunk, stop) :]
                if chunk:
                    yield self._without_empty(chunk)
                return
            yield self._without_empty(chunk)
            if len(chunk) < size:
                return
            size = min(size * 2, 4096)

    def _without_empty(self, chunk: list[bytes]) -> list[bytes]:
        """``chunk`` without the marked actors that have no record."""
        marks = self._marks
        if not marks.set_range(_EMPTY + chunk[0]):
            return chunk
        last = _EMPTY + chunk[-1]
        empty: set[bytes] = set()
        # Keys between two marks are marks: no need to check the prefix.
        for key in takewhile(last.__ge__, marks.iternext(values=False)):
            encoded = key[len(_EMPTY) :]
            entry = self._txn.get(encoded, db=self._env.actors)
            if entry is not None and not _has_records(self._records, entry[: _NUMBER.size]):
                empty.add(encoded)
        return [encoded for encoded in chunk if encoded not in empty] if empty else chunk
