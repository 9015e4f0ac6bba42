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
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from kelpie.errors import ConfigError
from kelpie.identity import ActorId
from kelpie.storage.base import BufferedTransaction

__all__ = [
    "ActorKeys",
    "RedisReads",
    "actor_keys",
    "check_prefix_name",
    "hash_tag",
    "lex_range",
]


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


@dataclass(frozen=True, slots=True)
class ActorKeys:
    """The three Redis keys holding one actor's records."""

    version: bytes
    data: bytes
    index: bytes


@lru_cache(maxsize=8192)
def actor_keys(prefix: str, actor: ActorId) -> ActorKeys:
    """The keys of ``actor`` under ``prefix`` (cached: actors are reused heavily)."""
    base = prefix.encode("utf-8") + b":{" + hash_tag(actor) + b"}:"
    return ActorKeys(version=base + b"v", data=base + b"d", index=base + b"k")


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
