"""Idempotency records: the stored result of a call, and which call it was.

A record is ``b"\\x01" | fingerprint (16 bytes) | the result's JSON``. The
fingerprint is a truncated SHA-256 of the operation name and the canonical
JSON of the payload, so a key reused for another call is told apart from a
retry of the same one. Records written before fingerprints existed are the
result's JSON alone; JSON never starts with a control byte, so the two forms
cannot be confused, and an old record (no fingerprint) answers any call that
uses its key, as it always did.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from kelpie.actor.codec import decode_json
from kelpie.actor.keys import idempotency_key
from kelpie.errors import CorruptStateError, IdempotencyKeyReusedError
from kelpie.identity import ActorId

__all__ = ["Idempotency"]

_FORMAT = b"\x01"
_FINGERPRINT_BYTES = 16


@dataclass(frozen=True, slots=True)
class Idempotency:
    """The idempotency key of one call and the fingerprint of that call."""

    key: str
    record_key: bytes
    """Where the record of ``key`` is stored among the actor's keys (ADR 0004)."""
    fingerprint: bytes

    @classmethod
    def of(cls, key: str, operation: str, payload_json: bytes) -> Idempotency:
        """``payload_json``: the payload as ``encode_json`` writes it (canonical)."""
        name = operation.encode("utf-8")
        digest = hashlib.sha256(b"%d:" % len(name) + name + payload_json).digest()
        return cls(key, idempotency_key(key), digest[:_FINGERPRINT_BYTES])

    def pack(self, result_json: bytes) -> bytes:
        """The record to store for a call that returned ``result_json``."""
        return _FORMAT + self.fingerprint + result_json

    def replay(self, actor_id: ActorId, record: bytes) -> Any:
        """The stored result, if ``record`` was written by this same call.

        Raises ``IdempotencyKeyReusedError`` if it was written by another
        operation or payload, ``CorruptStateError`` if it cannot be read.
        """
        if record[:1] == _FORMAT:
            stored = record[1 : 1 + _FINGERPRINT_BYTES]
            result_json = record[1 + _FINGERPRINT_BYTES :]
            if len(stored) != _FINGERPRINT_BYTES:
                raise CorruptStateError(
                    f"the idempotency record of key {self.key!r:.80} on actor {actor_id} "
                    f"is truncated"
                )
            if stored != self.fingerprint:
                raise IdempotencyKeyReusedError(
                    f"idempotency key {self.key!r:.80} was already used on actor {actor_id} for "
                    f"another operation or payload; nothing was run or stored"
                )
        elif record and record[0] < 0x20:
            raise CorruptStateError(
                f"the idempotency record of key {self.key!r:.80} on actor {actor_id} has format "
                f"{record[0]}, unknown to this version of kelpie"
            )
        else:
            result_json = record  # written before fingerprints: accepted for any call
        try:
            return decode_json(result_json)
        except ValueError as exc:
            raise CorruptStateError(
                f"the idempotency record of key {self.key!r:.80} on actor {actor_id} "
                f"is not JSON: {exc}"
            ) from exc
