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
costs one seek per id length present and one step per actor listed; it never
reads a value, and a namespace listing never touches another namespace.

A backend supplies an ``EncodedIndex``: ``first_from`` (a seek) and ``scan``
(a lazy range over the actors that have at least one key).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Protocol

from kelpie.errors import CorruptStateError, InvalidActorIdError
from kelpie.identity import MAX_ID_PART_BYTES, ActorId

__all__ = ["EncodedIndex", "list_encoded"]

_PAST_LENGTHS = bytes((MAX_ID_PART_BYTES + 1,))
"""Greater than every length byte: ``[n] + ns + _PAST_LENGTHS`` is past namespace ``ns``."""


class EncodedIndex(Protocol):
    """The sorted table of encoded actor ids, as ``list_encoded`` reads it."""

    def first_from(self, key: bytes) -> bytes | None:
        """The least stored encoded id ``>= key`` (with keys or not), or None."""
        ...

    def scan(self, start: bytes, stop: bytes) -> Iterator[bytes]:
        """Stored encoded ids in ``[start, stop)``, ascending, of actors with a key."""
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
        for encoded in _ids(index, name, bound):
            found.append(_actor(encoded))
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


def _ids(index: EncodedIndex, namespace: bytes, bound: bytes | None) -> Iterator[bytes]:
    """The encoded actors of ``namespace`` (with a key) whose id is greater than ``bound``,
    in bytewise order of their ids.

    Among ids of one length, bytewise order is the stored order. Of the ids
    of length ``n``, those greater than ``bound`` start at ``bound[:n]``
    (only an id equal to ``bound[:n]`` there is not greater).
    """
    prefix = bytes((len(namespace),)) + namespace
    skip = len(prefix) + 1  # where the id starts in an encoded actor
    runs = []
    for length in _present_lengths(index, prefix):
        head = prefix + bytes((length,))
        start = head if bound is None else head + bound[:length]
        keys = index.scan(start, prefix + bytes((length + 1,)))
        runs.append(keys if bound is None else _ids_above(keys, skip, bound))
    if len(runs) == 1:
        return runs[0]
    return heapq.merge(*runs, key=lambda encoded: encoded[skip:])


def _ids_above(keys: Iterator[bytes], skip: int, bound: bytes) -> Iterator[bytes]:
    for encoded in keys:
        if encoded[skip:] > bound:
            yield encoded
            yield from keys  # the rest of the run is above the bound too
            return


def _actor(encoded: bytes) -> ActorId:
    try:
        return ActorId.decode(encoded)
    except InvalidActorIdError as exc:
        raise CorruptStateError(f"a stored actor id is not valid: {exc}") from exc
