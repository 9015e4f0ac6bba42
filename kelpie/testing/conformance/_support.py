"""Helpers shared by the conformance tests: hang guards and hostile actor ids."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from kelpie.identity import MAX_ID_PART_BYTES, ActorId

__all__ = ["COLLIDING_PAIRS", "HANG_GUARD", "bounded", "colliding_pair"]

T = TypeVar("T")

HANG_GUARD = 120.0
"""Seconds before a stuck test fails instead of hanging; no test asserts on time."""


async def bounded(awaitable: Awaitable[T]) -> T:
    """``awaitable``, failing the test if it hangs (a guard, not a timing assertion)."""
    return await asyncio.wait_for(awaitable, HANG_GUARD)


def _max_part(head: str, fill: str, unique: str) -> str:
    """A part of exactly ``MAX_ID_PART_BYTES`` UTF-8 bytes starting with ``head + unique``."""
    text = head + unique
    return text + fill * (MAX_ID_PART_BYTES - len(text.encode()))


COLLIDING_PAIRS: tuple[str, ...] = (
    "colon",
    "slash",
    "braces",
    "nul",
    "space",
    "concatenation",
    "percent-escape",
    "unicode-normal-forms",
    "id-prefix",
    "max-length",
)
"""Labels of actor pairs that share a record under some naive key encoding."""


def colliding_pair(label: str, unique: str) -> tuple[ActorId, ActorId]:
    """Two different actors that a naive ``ns:id``-style encoding would alias.

    ``unique`` keeps the pair apart from every other test run on a shared store.
    """
    u = unique
    pairs: dict[str, tuple[ActorId, ActorId]] = {
        # "a:b" + ":" + "c" == "a" + ":" + "b:c"
        "colon": (ActorId("a:b", f"c{u}"), ActorId("a", f"b:c{u}")),
        "slash": (ActorId("a/b", f"c{u}"), ActorId("a", f"b/c{u}")),
        # Redis hash tags, and "ns" + "id" concatenated without a separator.
        "braces": (ActorId("{a}", f"b}}{u}"), ActorId("{a}b", f"}}{u}")),
        "nul": (ActorId("a\x00b", f"c{u}"), ActorId("a", f"b\x00c{u}")),
        "space": (ActorId("a b", f"c {u}"), ActorId("a", f"b c {u}")),
        "concatenation": (ActorId("ab", f"c{u}"), ActorId("a", f"bc{u}")),
        # An encoding that percent-escapes ':' must not alias a literal "%3A".
        "percent-escape": (ActorId("a%3Ab", f"c{u}"), ActorId("a:b", f"c{u}")),
        # NFC and NFD spellings of "é" are different strings, hence different actors.
        "unicode-normal-forms": (
            ActorId("caf\u00e9", f"\u00e9{u}"),
            ActorId("cafe\u0301", f"e\u0301{u}"),
        ),
        # One id is a prefix of the other: a prefix scan must not pick up both.
        "id-prefix": (ActorId("ns", f"x{u}"), ActorId("ns", f"x{u}x")),
        # Both parts at the 128-byte limit, differing only in the very last
        # byte: an encoding that truncates or hashes carelessly aliases them.
        "max-length": (
            ActorId("\u00fc" * (MAX_ID_PART_BYTES // 2), _max_part("i", "x", u)[:-1] + "1"),
            ActorId("\u00fc" * (MAX_ID_PART_BYTES // 2), _max_part("i", "x", u)[:-1] + "2"),
        ),
    }
    return pairs[label]
