"""Where an actor's records live among its keys (ADR 0004).

The runtime keeps everything of one actor under that actor's ``ActorId``, so
one storage transaction covers them all. Each record kind has its own first
byte, so ``kv_*`` (which can only reach ``USER``-prefixed keys) can never read,
write or list the state or the idempotency records.
"""

from __future__ import annotations

import hashlib

from kelpie.errors import InvalidKeyError

__all__ = [
    "MAX_ACTOR_KEY_BYTES",
    "STATE_KEY",
    "idempotency_key",
    "idempotency_slot_key",
    "user_key",
    "user_prefix",
]

MAX_ACTOR_KEY_BYTES = 240

USER = b"u"
STATE_KEY = b"s"
_IDEMPOTENCY = b"i"
_IDEMPOTENCY_HASHED = b"j"
_IDEMPOTENCY_SLOT = b"r"


def user_key(key: object) -> bytes:
    """The storage key of an actor's own ``key``; checks it is bytes of 1..240."""
    if not isinstance(key, bytes):
        raise TypeError(f"actor keys must be bytes, got {type(key).__name__}")
    if not key:
        raise InvalidKeyError("actor keys must not be empty")
    if len(key) > MAX_ACTOR_KEY_BYTES:
        raise InvalidKeyError(f"actor key is {len(key)} bytes; the limit is {MAX_ACTOR_KEY_BYTES}")
    return USER + key


def user_prefix(prefix: object) -> bytes:
    """The storage prefix under which an actor's keys starting with ``prefix`` live."""
    if not isinstance(prefix, bytes):
        raise TypeError(f"prefixes must be bytes, got {type(prefix).__name__}")
    if len(prefix) > MAX_ACTOR_KEY_BYTES:
        raise InvalidKeyError(f"prefix is {len(prefix)} bytes; the limit is {MAX_ACTOR_KEY_BYTES}")
    return USER + prefix


def idempotency_key(key: str) -> bytes:
    """The storage key of the record of idempotency key ``key``.

    Short keys are stored as they are (readable); long ones by their SHA-256,
    under a different first byte so the two forms never meet.
    """
    encoded = key.encode("utf-8")
    if len(encoded) <= MAX_ACTOR_KEY_BYTES:
        return _IDEMPOTENCY + encoded
    return _IDEMPOTENCY_HASHED + hashlib.sha256(encoded).digest()


def idempotency_slot_key(slot: int) -> bytes:
    """The ring slot that remembers which idempotency record to evict next."""
    return _IDEMPOTENCY_SLOT + slot.to_bytes(2, "big")
