"""Where kelpie keeps an actor's records in Redis (ADR 0003).

Every key starts with ``{prefix}:`` and carries one hash tag built from the
actor id, so all records of one actor share a hash slot::

    {prefix}:{<ns>:<id>}:v   STRING  the actor's version, INCR'd by every commit
    {prefix}:{<ns>:<id>}:d   HASH    field = key bytes -> value bytes
    {prefix}:{<ns>:<id>}:k   ZSET    every key, score 0, for ZRANGEBYLEX listing

``<ns>`` and ``<id>`` are the UTF-8 bytes of the namespace and the id with
every byte outside ``[A-Za-z0-9._~-]`` percent-escaped (``:`` -> ``%3A``,
``{`` -> ``%7B``), so the tag never contains ``{``, ``}`` or an unescaped
``:``: the encoding is injective and stays readable in ``redis-cli``.

Beside them, the actor index and the delete counter (ADR 0014), whose hash
tag contains no ``:`` and so is never an actor's::

    {prefix}:{#}:a      ZSET    one member per actor holding a record (score 0)
    {prefix}:{#}:s      STRING  the highest version a deleted actor had
    {prefix}:{#}:f      STRING  set once the index covers older data

On Redis Cluster each hash slot has its own ``a`` and ``s`` (tag ``#<n>``,
the smallest ``n`` whose ``#<n>`` hashes to that slot), so a commit updates
them with the actor's keys, in one slot.
"""

from __future__ import annotations

import abc
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from kelpie.errors import ConfigError
from kelpie.identity import ActorId
from kelpie.storage.base import BufferedTransaction

__all__ = [
    "SLOTS",
    "ActorKeys",
    "RedisReads",
    "actor_from_tag",
    "actor_keys",
    "actor_member",
    "check_prefix_name",
    "hash_tag",
    "lex_range",
    "list_range",
    "member_actor",
    "slot_of_key",
    "slot_tag",
    "store_key",
]

SLOTS = 16384
"""Redis Cluster's number of hash slots."""


def check_prefix_name(prefix: object) -> str:
    """Return ``prefix`` if it can start every kelpie key; raise ``ConfigError`` otherwise."""
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError("the redis key prefix must be a non-empty string")
    if "{" in prefix or "}" in prefix:
        raise ConfigError(
            "the redis key prefix must not contain '{' or '}': they would change "
            "the hash slot of kelpie's keys"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in prefix):
        raise ConfigError("the redis key prefix must not contain spaces or control characters")
    return prefix


def _escape(part: str) -> str:
    # quote() with safe="" keeps exactly [A-Za-z0-9._~-] and escapes every other byte.
    return quote(part.encode("utf-8"), safe="")


def hash_tag(actor: ActorId) -> bytes:
    """The hash tag content for ``actor``: ``<escaped ns>:<escaped id>``."""
    return f"{_escape(actor.namespace)}:{_escape(actor.id)}".encode("ascii")


def actor_from_tag(tag: bytes) -> ActorId:
    """The actor whose ``hash_tag`` is ``tag``; ``ValueError`` if it is none."""
    ns, sep, ident = tag.partition(b":")
    if not sep or b":" in ident:
        raise ValueError(f"not an actor hash tag: {tag!r}")
    return ActorId(unquote_to_bytes(ns).decode("utf-8"), unquote_to_bytes(ident).decode("utf-8"))


def slot_of_key(key: bytes) -> int:
    """The Redis Cluster hash slot of ``key`` (CRC16/XMODEM of its hash tag)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key, 0) % SLOTS


@lru_cache(maxsize=1)
def _slot_tags() -> tuple[bytes, ...]:
    tags: list[bytes | None] = [None] * SLOTS
    missing = SLOTS
    n = 0
    while missing:
        tag = b"#%d" % n
        slot = binascii.crc_hqx(tag, 0) % SLOTS
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return tuple(tag for tag in tags if tag is not None)


def slot_tag(slot: int | None) -> bytes:
    """The hash tag of the per-slot index keys of ``slot``; ``#`` for one server (``None``).

    ``#<n>`` with the smallest ``n`` that hashes to ``slot`` (the table is
    computed once, in about a tenth of a second). No actor tag lacks a ``:``,
    so these never name an actor's keys.
    """
    return b"#" if slot is None else _slot_tags()[slot]


def store_key(prefix: str, slot: int | None, kind: bytes) -> bytes:
    """``{prefix}:{#...}:<kind>``: actor index ``a``, delete counter ``s``, format marker ``f``."""
    return prefix.encode("utf-8") + b":{" + slot_tag(slot) + b"}:" + kind


def _escape_part(part: str) -> bytes:
    return part.encode("utf-8").replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def actor_member(actor: ActorId) -> bytes:
    """The actor's member in the index: byte order of members is ``ActorId`` order.

    Each part is its UTF-8 bytes with ``00`` escaped as ``00 FF`` and ends with
    ``00 01`` (the FoundationDB tuple layer's idea): a part that is a prefix of
    another sorts first, and UTF-8 bytes compare as code points do.
    """
    return _escape_part(actor.namespace) + _escape_part(actor.id)


def member_actor(member: bytes) -> ActorId:
    """The ``ActorId`` of an index member (``actor_member``'s inverse)."""
    cut = member.find(b"\x00\x01")
    if cut < 0 or member[-2:] != b"\x00\x01":
        raise ValueError(f"not an actor index member: {member!r}")
    ns = member[:cut]
    ident = member[cut + 2 : -2]
    if b"\x00" in ns:
        ns = ns.replace(b"\x00\xff", b"\x00")
    if b"\x00" in ident:
        ident = ident.replace(b"\x00\xff", b"\x00")
    try:
        # ActorId.decode checks what the constructor does, without re-encoding.
        return ActorId.decode(b"%c%b%c%b" % (len(ns), ns, len(ident), ident))
    except (ValueError, OverflowError) as exc:  # InvalidActorIdError; a part over 255 bytes
        raise ValueError(f"not an actor index member: {member!r}") from exc


def list_range(namespace: str | None, after: ActorId | None) -> tuple[bytes, bytes]:
    """``ZRANGEBYLEX`` bounds of the actors of ``namespace`` (all: ``None``) after ``after``."""
    low, high = b"-", b"+"
    floor = b""
    if namespace is not None:
        part = _escape_part(namespace)
        floor = part
        low, high = b"[" + part, b"(" + part[:-1] + b"\x02"
    if after is not None:
        member = actor_member(after)
        if member >= floor:
            low = b"(" + member
    return low, high


@dataclass(frozen=True, slots=True)
class ActorKeys:
    """The Redis keys holding one actor's records, and where the actor is indexed.

    ``actors`` and ``deletes`` are the store's (one server) or the actor's
    slot's (Redis Cluster) index and delete counter; ``member`` is the actor's
    member in ``actors``.
    """

    version: bytes
    data: bytes
    index: bytes
    actors: bytes
    deletes: bytes
    member: bytes


@lru_cache(maxsize=8192)
def actor_keys(prefix: str, actor: ActorId, per_slot: bool = False) -> ActorKeys:
    """The keys of ``actor`` under ``prefix`` (cached: actors are reused heavily).

    ``per_slot``: index keys of the actor's own hash slot (Redis Cluster).
    """
    base = prefix.encode("utf-8") + b":{" + hash_tag(actor) + b"}:"
    slot = slot_of_key(base) if per_slot else None
    return ActorKeys(
        version=base + b"v",
        data=base + b"d",
        index=base + b"k",
        actors=store_key(prefix, slot, b"a"),
        deletes=store_key(prefix, slot, b"s"),
        member=actor_member(actor),
    )


def lex_range(prefix: bytes) -> tuple[bytes, bytes]:
    """``ZRANGEBYLEX`` bounds selecting exactly the members that start with ``prefix``."""
    if not prefix:
        return b"-", b"+"
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"[" + prefix, b"+"
    upper = stripped[:-1] + bytes((stripped[-1] + 1,))
    return b"[" + prefix, b"(" + upper


class RedisReads(BufferedTransaction):
    """The read commands of a Redis transaction, in both commit modes.

    A subclass sets ``_keys`` and sends each command its own way
    (``_read_command``: pipelined with the version, or on a watched connection).
    """

    _keys: ActorKeys

    @abc.abstractmethod
    async def _read_command(self, command: Sequence[bytes], action: str) -> Any:
        """Send one read command of this transaction; its reply."""

    async def _read(self, key: bytes) -> bytes | None:
        reply = await self._read_command((b"HGET", self._keys.data, key), "reading a key")
        return None if reply is None else bytes(reply)

    async def _read_keys(self, prefix: bytes) -> list[bytes]:
        low, high = lex_range(prefix)
        reply = await self._read_command(
            (b"ZRANGEBYLEX", self._keys.index, low, high), "listing keys"
        )
        return [bytes(key) for key in reply]
