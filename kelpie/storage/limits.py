"""The size and type limits every backend enforces before anything is written."""

from __future__ import annotations

from kelpie.errors import InvalidKeyError, ValueTooLargeError
from kelpie.identity import ActorId

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "check_actor",
    "check_key",
    "check_prefix",
    "check_value",
]

MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 16 * 1024 * 1024


def check_actor(actor: object) -> ActorId:
    if not isinstance(actor, ActorId):
        raise TypeError(f"actor must be an ActorId, got {type(actor).__name__}")
    return actor


def check_key(key: object, *, max_bytes: int = MAX_KEY_BYTES) -> bytes:
    """Return ``key`` if it is ``bytes`` of 1..max_bytes; raise otherwise."""
    if not isinstance(key, bytes):
        raise TypeError(f"keys must be bytes, got {type(key).__name__}")
    if not key:
        raise InvalidKeyError("keys must not be empty")
    if len(key) > max_bytes:
        raise InvalidKeyError(f"key is {len(key)} bytes; the limit is {max_bytes}")
    return key


def check_prefix(prefix: object) -> bytes:
    """Return ``prefix`` if it is ``bytes`` (possibly empty) no longer than a key."""
    if not isinstance(prefix, bytes):
        raise TypeError(f"prefixes must be bytes, got {type(prefix).__name__}")
    if len(prefix) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"prefix is {len(prefix)} bytes; the limit is {MAX_KEY_BYTES}")
    return prefix


def check_value(value: object) -> bytes:
    """Return ``value`` if it is ``bytes`` of at most 16 MiB; raise otherwise."""
    if not isinstance(value, bytes):
        raise TypeError(f"values must be bytes, got {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise ValueTooLargeError(f"value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES}")
    return value
