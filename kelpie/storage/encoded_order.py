"""``list_actors`` in ``ActorId`` order over a table sorted by ``ActorId.encode()``.

The embedded backends key their actor tables by ``ActorId.encode()``: a length
byte and the UTF-8 bytes of the namespace, then the same for the id (ADR
0001). Sorted bytewise, that table groups actors by namespace *length* first,
so it is not ``ActorId`` order ("b" sorts before "aa"). Rather than change the
stored layout (files written by earlier releases must list too), the listing
merges: within one namespace, the ids of each length are one contiguous,
bytewise-sorted range, and a merge of those ranges (at most 128, one per id
length that occurs) yields the ids in code-point order; the namespaces
themselves are found the same way, one seek per distinct namespace. A page
costs one seek per id length present and one step per actor listed (with
several id lengths, a run reads ahead in batches growing from 65); it never
reads a value, and a namespace listing never touches another namespace.

A backend supplies an ``EncodedIndex``: ``first_from`` (a seek) and ``scan``
(a lazy range over the actors that have at least one key, told how many the
page will take so it can read that many at once). Each run of ids is turned
into ``ActorId`` objects in bulk (``ActorId._trusted_many``) after checking,
in bulk, what damage could break; a damaged id is a ``CorruptStateError``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from itertools import dropwhile, islice, repeat
from operator import add, itemgetter, ne
from typing import Protocol

from kelpie.errors import CorruptStateError
from kelpie.identity import MAX_ID_PART_BYTES, ActorId

__all__ = ["EncodedIndex", "list_encoded"]

_PAST_LENGTHS = bytes((MAX_ID_PART_BYTES + 1,))
"""Greater than every length byte: ``[n] + ns + _PAST_LENGTHS`` is past namespace ``ns``."""


class EncodedIndex(Protocol):
    """The sorted table of encoded actor ids, as ``list_encoded`` reads it."""

    def first_from(self, key: bytes) -> bytes | None:
        """The least stored encoded id ``>= key`` (with keys or not), or None."""
        ...

    def scan(self, start: bytes, stop: bytes, first: int) -> Iterator[bytes]:
        """Stored encoded ids in ``[start, stop)``, ascending, of actors with a key.

        ``first``: how many the caller expects to take (it may take fewer or
        more): a backend may read that many ahead, then more in growing steps.
        """
        ...


def list_encoded(
    index: EncodedIndex, namespace: str | None, after: ActorId | None, limit: int
) -> list[ActorId]:
    """Up to ``limit`` actors with a key, in ``ActorId`` order, strictly after ``after``."""
    found: list[ActorId] = []
    if namespace is not None:
        if after is not None and after.namespace > namespace:
            return found
        names: Iterator[bytes] = iter((namespace.encode(),))
    else:
        names = _namespaces(index, None if after is None else after.namespace.encode())
    after_namespace = None if after is None else after.namespace.encode()
    for name in names:
        bound = after.id.encode() if after is not None and after_namespace == name else None
        wanted = limit - len(found)
        ids, length = _ids(index, name, bound, wanted)
        run = list(islice(ids, wanted))
        if run:
            found += _actors(name, run, length)
            if len(found) == limit:
                return found
    return found


def _present_lengths(index: EncodedIndex, prefix: bytes) -> Iterator[int]:
    """Each length byte ``n`` such that some stored id starts with ``prefix + [n]``."""
    length = 1
    while length <= MAX_ID_PART_BYTES:
        key = index.first_from(prefix + bytes((length,)))
        if key is None or len(key) <= len(prefix) or not key.startswith(prefix):
            return
        length = key[len(prefix)]
        if length > MAX_ID_PART_BYTES:
            return
        yield length
        length += 1


def _namespaces(index: EncodedIndex, lowest: bytes | None) -> Iterator[bytes]:
    """Every stored namespace ``>= lowest``, in bytewise order."""
    runs = [_namespaces_of_length(index, n, lowest) for n in _present_lengths(index, b"")]
    return heapq.merge(*runs)


def _namespaces_of_length(
    index: EncodedIndex, length: int, lowest: bytes | None
) -> Iterator[bytes]:
    head = bytes((length,))
    key = index.first_from(head if lowest is None else head + lowest[:length])
    while key is not None and key[0] == length:
        name = key[1 : 1 + length]
        if lowest is None or name >= lowest:
            yield name
        key = index.first_from(head + name + _PAST_LENGTHS)


def _ids(
    index: EncodedIndex, namespace: bytes, bound: bytes | None, wanted: int
) -> tuple[Iterator[bytes], int | None]:
    """The encoded actors of ``namespace`` (with a key) whose id is greater than ``bound``,
    in bytewise order of their ids; and their id length if they all have one length.

    Among ids of one length, bytewise order is the stored order. Of the ids
    of length ``n``, those greater than ``bound`` start at ``bound[:n]``
    (only an id equal to ``bound[:n]`` there is not greater). The caller takes
    at most ``wanted``: each run reads ahead its share of it (one more when
    the id equal to ``bound[:n]`` may be skipped).
    """
    prefix = bytes((len(namespace),)) + namespace
    skip = len(prefix) + 1  # where the id starts in an encoded actor
    lengths = list(_present_lengths(index, prefix))
    first = (wanted if len(lengths) == 1 else min(wanted, 64)) + (bound is not None)
    runs = []
    for length in lengths:
        head = prefix + bytes((length,))
        start = head if bound is None else head + bound[:length]
        keys = index.scan(start, prefix + bytes((length + 1,)), first)
        runs.append(keys if bound is None else _ids_above(keys, skip, bound))
    if len(runs) == 1:
        return runs[0], lengths[0]
    return heapq.merge(*runs, key=itemgetter(slice(skip, None))), None


def _ids_above(keys: Iterator[bytes], skip: int, bound: bytes) -> Iterator[bytes]:
    # Only the ids up to the first one above the bound are compared (the rest
    # of the run is above it too); dropwhile then passes the run through in C.
    return dropwhile(lambda encoded: encoded[skip:] <= bound, keys)


def _actors(namespace: bytes, run: list[bytes], length: int | None) -> list[ActorId]:
    """The ``ActorId`` of each encoded actor of ``namespace`` in ``run``, built in bulk.

    The stored encoding is the store's own (``ActorId.encode()``), so only what
    damage could break is checked -- each id's length byte against its length
    (every key of a run starts with the namespace and a length byte in 1..128;
    ``length``, when known, is that byte for the whole run), and UTF-8 --
    before ``ActorId._trusted_many`` builds the ids without re-validating
    them, with no Python frame per id.
    """
    skip = len(namespace) + 2  # where the id starts in an encoded actor
    if length is not None:  # one range of the index: every key starts with that length byte
        damaged = set(map(len, run)) != {skip + length}
    else:
        lengths = map(add, map(itemgetter(skip - 1), run), repeat(skip))
        damaged = any(map(ne, map(len, run), lengths))
    if damaged or not 0 < len(namespace) <= MAX_ID_PART_BYTES:
        raise CorruptStateError(f"a stored actor id is not valid: one of {run[0]!r}...")
    try:
        name = namespace.decode()
        ids = list(map(bytes.decode, map(itemgetter(slice(skip, None)), run)))
    except UnicodeDecodeError as exc:
        raise CorruptStateError(f"a stored actor id is not valid UTF-8: {exc}") from exc
    return ActorId._trusted_many(name, ids)
