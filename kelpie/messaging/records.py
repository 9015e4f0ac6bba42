"""The stored records of messaging and reminders, beside the actor's others (ADR 0018).

Every record lives under an actor's ``ActorId`` with a first byte of its own
(ADR 0004 keeps ``u``, ``s``, ``i``, ``j``, ``r``):

- sender side: ``o`` + target tag + seq (8 bytes) an outbox entry, ``p`` +
  target tag the last seq sent to that target;
- target side: ``h`` + sender tag the highest seq applied from that sender,
  ``d`` + sender tag + seq a dead letter, ``f`` + sender tag the failed (or
  possibly interrupted) attempts at that sender's next message;
- ``m`` + name a reminder.

A tag is 16 bytes of the SHA-256 of an actor id's injective encoding, so keys
stay short whatever the ids contain. Sequence numbers count per (sender,
target) from 1, so "applied up to seq N from sender S" is exact.

The indexes live in a few runtime-owned actors ``kelpie.index/00`` ..
``/15``: ``o`` + sender tag + token: the sender may have an outbox (written
before the sender's commit), ``t`` + due (8 bytes, microseconds) + tag: a
reminder may be due then.
"""

from __future__ import annotations

import copy
import hashlib
from typing import TYPE_CHECKING, Any

from kelpie.actor.codec import decode_json, encode_json
from kelpie.errors import CorruptStateError
from kelpie.identity import ActorId

if TYPE_CHECKING:
    from kelpie.messaging.inbox import Arrival

__all__ = [
    "INDEX_NAMESPACE",
    "INDEX_SHARDS",
    "OUTBOX",
    "Message",
    "counter_key",
    "dead_letter_key",
    "failures_key",
    "high_water_key",
    "index_actor",
    "outbox_key",
    "reminder_key",
    "tag",
]

OUTBOX = b"o"
COUNTER = b"p"
HIGH_WATER = b"h"
DEAD_LETTER = b"d"
FAILURES = b"f"
REMINDER = b"m"

INDEX_NAMESPACE = "kelpie.index"
INDEX_SHARDS = 16
INDEX_OUTBOX = b"o"
INDEX_DUE = b"t"

MAX_REMINDER_NAME_BYTES = 200

NOT_SCALAR: Any = object()
"""A message's ``scalar`` when its payload is not an immutable JSON scalar."""


CACHE_LIMIT = 65536
"""Most entries a cache of this module holds; a full cache starts again empty."""

_tags: dict[tuple[str, str, str | None], bytes] = {}


def tag(actor: ActorId, extra: str | None = None) -> bytes:
    """16 bytes naming ``actor`` (and ``extra``) among the keys of another actor (cached).

    Cached by the id's strings, not by the ``ActorId``: a handler builds a
    new id for each message it sends, and a plain dict (no LRU bookkeeping)
    keeps a hit to one lookup.
    """
    key = (actor.namespace, actor.id, extra)
    found = _tags.get(key)
    if found is None:
        found = _cached(_tags, key, _tag(actor, extra))
    return found


def _tag(actor: ActorId, extra: str | None) -> bytes:
    ns, id_ = actor.namespace.encode(), actor.id.encode()
    text = b"%d:%s%d:%s" % (len(ns), ns, len(id_), id_)
    if extra is not None:
        text += extra.encode()
    return hashlib.sha256(text).digest()[:16]


def _cached(cache: dict[Any, bytes], key: Any, value: bytes) -> bytes:
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def seq_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


def seq_of(raw: bytes | None, what: str) -> int:
    if raw is None:
        return 0
    if len(raw) != 8:
        raise CorruptStateError(f"{what} is {len(raw)} bytes, not 8")
    return int.from_bytes(raw, "big")


def outbox_key(target_tag: bytes, seq: int) -> bytes:
    return OUTBOX + target_tag + seq_bytes(seq)


_counter_keys: dict[bytes, bytes] = {}
_high_water_keys: dict[bytes, bytes] = {}


def counter_key(target_tag: bytes) -> bytes:
    """``p`` + tag, one bytes object per tag (cached, see ``high_water_key``)."""
    found = _counter_keys.get(target_tag)
    if found is None:
        found = _cached(_counter_keys, target_tag, COUNTER + target_tag)
    return found


def high_water_key(sender_tag: bytes) -> bytes:
    """``h`` + tag, one bytes object per tag (cached).

    Written on every message applied: the same object each time is found in
    a store's or a transaction's dict by identity, its hash already known,
    where a new one is hashed and compared byte by byte with the stored key.
    """
    found = _high_water_keys.get(sender_tag)
    if found is None:
        found = _cached(_high_water_keys, sender_tag, HIGH_WATER + sender_tag)
    return found


def failures_key(sender_tag: bytes) -> bytes:
    return FAILURES + sender_tag


def pack_failures(seq: int, attempts: int, error: str) -> bytes:
    """The attempts recorded at a target for message ``seq`` of one sender."""
    return encode_json({"seq": seq, "attempts": attempts, "error": error[:2000]}, "failures")


def unpack_failures(raw: bytes | None, seq: int, what: str) -> tuple[int, str]:
    """(attempts, last error) recorded for message ``seq``; (0, "") if none or another's."""
    if raw is None:
        return 0, ""
    try:
        value = decode_json(raw)
        stored_seq, attempts, error = value["seq"], value["attempts"], value["error"]
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptStateError(f"{what} is not readable: {exc}") from exc
    if not (isinstance(attempts, int) and isinstance(error, str)):
        raise CorruptStateError(f"{what} is malformed")
    return (attempts, error) if stored_seq == seq else (0, "")


def dead_letter_key(sender_tag: bytes, seq: int) -> bytes:
    return DEAD_LETTER + sender_tag + seq_bytes(seq)


def reminder_key(name: str) -> bytes:
    return REMINDER + name.encode()


def index_actor(actor: ActorId) -> ActorId:
    """The index shard that lists ``actor``'s outbox and reminders."""
    return ActorId(INDEX_NAMESPACE, f"{tag(actor)[0] % INDEX_SHARDS:02d}")


def index_shards() -> list[ActorId]:
    return [ActorId(INDEX_NAMESPACE, f"{n:02d}") for n in range(INDEX_SHARDS)]


def encode_actor(actor: ActorId, name: str | None = None) -> bytes:
    """An index entry's value: the actor (and reminder name) it stands for."""
    parts = [actor.namespace, actor.id] if name is None else [actor.namespace, actor.id, name]
    return encode_json(parts, "index entry")


def decode_actor(raw: bytes, what: str) -> tuple[ActorId, str]:
    try:
        value = decode_json(raw)
    except ValueError as exc:
        raise CorruptStateError(f"{what} is not readable: {exc}") from exc
    actor = actor_from(value, what)
    name = value[2] if len(value) > 2 else ""
    return actor, name


def actor_json(actor: ActorId) -> list[str]:
    return [actor.namespace, actor.id]


def actor_from(value: Any, what: str) -> ActorId:
    if not (isinstance(value, list) and len(value) >= 2 and all(isinstance(v, str) for v in value)):
        raise CorruptStateError(f"{what} does not name an actor")
    return ActorId(value[0], value[1])


class Message:
    """One outbox entry: from ``sender`` to ``target``, the ``seq``-th between them.

    The payload is kept as given: decoded (``payload``) or as the JSON the
    sender encoded (``payload_json``), which is decoded afresh for each
    delivery (no decode at the sender, no deep copy at the target), unless
    the sender also gave it as an immutable scalar (``scalar``): that needs
    neither.
    """

    __slots__ = (
        "_payload",
        "_scalar",
        "attempted",
        "flight",
        "key",
        "operation",
        "payload_json",
        "recovered",
        "sender",
        "sender_tag",
        "seq",
        "target",
    )

    def __init__(
        self,
        sender: ActorId,
        target: ActorId,
        seq: int,
        operation: str,
        payload: Any = None,
        *,
        payload_json: bytes | None = None,
        key: bytes | None = None,
        scalar: Any = NOT_SCALAR,
        sender_tag: bytes | None = None,
    ) -> None:
        self.sender = sender
        self.sender_tag = tag(sender) if sender_tag is None else sender_tag
        """``tag(sender)``: what names the sender among the target's records."""
        self.target = target
        self.seq = seq
        self.operation = operation
        self._payload = payload
        self.payload_json = payload_json
        """The payload as the sender encoded it (``None``: kept decoded in ``_payload``)."""
        self._scalar = scalar
        self.key = outbox_key(tag(target), seq) if key is None else key
        self.recovered = False
        """Read back from a stored outbox (a sweep): its delivery may have been cut short."""
        self.attempted = False
        """An attempt at it was recorded at the target (``f``): delivering it clears that."""
        self.flight: Arrival | None = None
        """While handed straight to its target: its ``Arrival`` (``kelpie.messaging.delivery``)."""

    @property
    def payload(self) -> Any:
        if self._scalar is not NOT_SCALAR:
            return self._scalar
        return self._payload if self.payload_json is None else decode_json(self.payload_json)

    def fresh_payload(self) -> Any:
        """The payload for one delivery: a handler may change it without touching others."""
        if self._scalar is not NOT_SCALAR:
            return self._scalar  # immutable: nothing to copy
        if self.payload_json is not None:
            return decode_json(self.payload_json)
        return copy.deepcopy(self._payload)

    def __repr__(self) -> str:
        return f"<message {self.sender} -> {self.target} #{self.seq} {self.operation}>"

    @staticmethod
    def pack(target: ActorId, operation: str, payload_json: bytes) -> bytes:
        """``{"t":[namespace,id],"o":operation}`` newline payload (JSON, compact)."""
        return _head(target, operation) + payload_json

    @classmethod
    def unpack(cls, sender: ActorId, key: bytes, value: bytes) -> Message:
        what = f"outbox entry {key!r} of {sender}"
        try:
            head_raw, _, payload_raw = value.partition(b"\n")
            head = decode_json(head_raw)
            payload = decode_json(payload_raw)
        except ValueError as exc:
            raise CorruptStateError(f"{what} is not readable: {exc}") from exc
        if not isinstance(head, dict) or not isinstance(head.get("o"), str):
            raise CorruptStateError(f"{what} names no operation")
        if len(key) != 25:
            raise CorruptStateError(f"{what} has a malformed key")
        target = actor_from(head.get("t"), what)
        return cls(sender, target, int.from_bytes(key[17:], "big"), head["o"], payload)


_heads: dict[tuple[str, str, str], bytes] = {}


def _head(target: ActorId, operation: str) -> bytes:
    key = (target.namespace, target.id, operation)
    found = _heads.get(key)
    if found is None:
        head = b'{"t":%s,"o":%s}\n' % (
            encode_json(actor_json(target), "message target"),
            encode_json(operation, "message operation"),
        )
        found = _cached(_heads, key, head)
    return found


def dead_letter(message: Message, error: str) -> bytes:
    return encode_json(
        {
            "from": actor_json(message.sender),
            "seq": message.seq,
            "operation": message.operation,
            "payload": message.payload,
            "error": error[:2000],
        },
        "dead letter",
    )
