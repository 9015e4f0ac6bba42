"""State codecs and the stored state record.

A state record is a small binary envelope around the codec's bytes::

    b"KLP" | format (1 byte) | seq (8 bytes) | idempotency count (8 bytes)
          | codec name length (1 byte) | lease owner length (1 byte)
          [ | state version (4 bytes), format 2 only ]
          | codec name | lease owner (UTF-8 node id, empty if none) | codec payload

``seq`` counts the actor's commits and fences them (a runtime commits only if
the stored ``seq`` is the one it loaded); the format byte lets the envelope
evolve; the codec name lets a runtime refuse bytes written by another codec;
the lease owner is the node that holds the actor (ADR 0007). The state version
is the ``Actor.state_version`` the payload was written at (ADR 0016): a record
at version 1 is written in format 1, byte for byte what releases before state
versions wrote (so they can still read it), a later version in format 2 (which
they refuse rather than misread).
JSON is the default codec: typed and validating for dataclass states
(``kelpie.actor.typed``), plain JSON for ``dict`` states; pickle is never used
(stored bytes must never execute code).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kelpie.actor.typed import StateTypeError, TypedJson
from kelpie.errors import CorruptStateError, SerializationError

__all__ = [
    "JsonCodec",
    "StateCodec",
    "StateRecord",
    "decode_json",
    "encode_json",
    "pack_record",
]

_MAGIC = b"KLP"
_FORMAT = 1
_FORMAT_VERSIONED = 2
_HEADER = struct.Struct(">3sBQQBB")
_VERSION = struct.Struct(">I")
MAX_STATE_VERSION = 2**32 - 1


class StateCodec(Protocol):
    """Turns an actor's state into bytes and back."""

    name: str

    def encode(self, state: Any) -> bytes: ...

    def decode(self, data: bytes, state_type: type[Any]) -> Any: ...


def _unencodable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encoder() -> Callable[[Any], str]:
    """``json.dumps(separators=(",", ":"), sort_keys=True, allow_nan=False,
    ensure_ascii=False)``, built once.

    ``JSONEncoder.encode`` builds its C encoder anew on every call; this keeps
    one. Without a markers dict a cycle is caught as ``RecursionError``.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has the C encoder
        encoder = json.JSONEncoder(
            separators=(",", ":"), sort_keys=True, allow_nan=False, ensure_ascii=False
        )
        return encoder.encode
    chunks = make(
        None, _unencodable, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


_encode = _make_encoder()
_encode_str = json.encoder.encode_basestring


def encode_json(value: Any, what: str) -> bytes:
    """Compact, deterministic JSON; anything JSON cannot hold raises SerializationError."""
    # The commonest payloads and results, without the encoder's machinery.
    if value is None:
        return b"null"
    if type(value) is int:
        return b"%d" % value
    try:
        if type(value) is str:  # what the encoder does with one, without its machinery
            return _encode_str(value).encode("utf-8")
        return _encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"{what} cannot be encoded as JSON: {exc}") from exc


def decode_json(data: bytes) -> Any:
    return json.loads(data)


class JsonCodec:
    """The default codec: a dataclass's fields (or a dict) as a JSON object.

    Dataclass states are typed: nested dataclasses and the types listed in
    ``kelpie.actor.typed`` round-trip, and decoding validates every field
    (``StateTypeError`` naming the field path). ``dict`` states are plain
    JSON, as they always were (sorted keys; JSON's own types only).
    """

    name = "json"

    def encode(self, state: Any) -> bytes:
        if isinstance(state, dict):
            return encode_json(state, "state")
        if dataclasses.is_dataclass(state) and not isinstance(state, type):
            return TypedJson.for_type(type(state)).encode(state)
        raise SerializationError(
            f"state must be a dataclass instance or a dict, got {type(state).__name__}"
        )

    def decode(self, data: bytes, state_type: type[Any]) -> Any:
        if state_type is dict:
            try:
                value = json.loads(data)
            except ValueError as exc:
                raise StateTypeError(f"(the state): not JSON: {exc}") from exc
            if not isinstance(value, dict):
                raise StateTypeError(f"(the state): expected object, got {type(value).__name__}")
            return value
        return TypedJson.for_type(state_type).decode(data)


def pack_record(
    seq: int,
    idempotency_count: int,
    codec: str,
    payload: bytes,
    owner: str,
    state_version: int = 1,
) -> bytes:
    """``StateRecord(...).encode()`` without building the record (the commit path)."""
    name = codec.encode("ascii")
    owner_bytes = owner.encode("utf-8")
    if state_version == 1:
        header = _HEADER.pack(_MAGIC, _FORMAT, seq, idempotency_count, len(name), len(owner_bytes))
    else:
        header = _HEADER.pack(
            _MAGIC, _FORMAT_VERSIONED, seq, idempotency_count, len(name), len(owner_bytes)
        ) + _VERSION.pack(state_version)
    return b"".join((header, name, owner_bytes, payload))


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The decoded envelope: commit sequence, idempotency count, codec payload."""

    seq: int
    idempotency_count: int
    codec: str
    payload: bytes
    owner: str = ""
    state_version: int = 1
    """The ``Actor.state_version`` the payload was written at (1 for format-1 records)."""

    def encode(self) -> bytes:
        return pack_record(
            self.seq,
            self.idempotency_count,
            self.codec,
            self.payload,
            self.owner,
            self.state_version,
        )

    @classmethod
    def decode(cls, data: bytes, what: str) -> StateRecord:
        """Parse an envelope; anything malformed raises CorruptStateError naming ``what``."""
        try:
            magic, fmt, seq, count, name_len, owner_len = _HEADER.unpack_from(data)
        except struct.error as exc:
            raise CorruptStateError(f"stored state of {what} is truncated") from exc
        if magic != _MAGIC:
            raise CorruptStateError(f"stored state of {what} is not a kelpie state record")
        start = _HEADER.size
        version = 1
        if fmt == _FORMAT_VERSIONED:
            try:
                (version,) = _VERSION.unpack_from(data, start)
            except struct.error as exc:
                raise CorruptStateError(f"stored state of {what} is truncated") from exc
            start += _VERSION.size
        elif fmt != _FORMAT:
            raise CorruptStateError(
                f"stored state of {what} has format {fmt}; this kelpie reads formats "
                f"{_FORMAT} and {_FORMAT_VERSIONED}"
            )
        end = start + name_len + owner_len
        if len(data) < end:
            raise CorruptStateError(f"stored state of {what} is truncated")
        try:
            codec = data[start : start + name_len].decode("ascii")
            owner = data[start + name_len : end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptStateError(f"stored state of {what} has a malformed header") from exc
        return cls(seq, count, codec, data[end:], owner, version)
