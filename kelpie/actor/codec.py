"""State codecs and the stored state record.

A state record is a small binary envelope around the codec's bytes::

    b"KLP" | format (1 byte) | seq (8 bytes) | idempotency count (8 bytes)
          | codec name length (1 byte) | lease owner length (1 byte)
          | codec name | lease owner (UTF-8 node id, empty if none) | codec payload

``seq`` counts the actor's commits and fences them (a runtime commits only if
the stored ``seq`` is the one it loaded); the format byte lets the envelope
evolve; the codec name lets a runtime refuse bytes written by another codec;
the lease owner is the node that holds the actor (ADR 0007).
JSON is the default codec; pickle is never used (stored bytes must never
execute code).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

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
_HEADER = struct.Struct(">3sBQQBB")


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


def encode_json(value: Any, what: str) -> bytes:
    """Compact, deterministic JSON; anything JSON cannot hold raises SerializationError."""
    # The commonest payloads and results, without the encoder's machinery.
    if value is None:
        return b"null"
    if type(value) is int:
        return b"%d" % value
    try:
        return _encode(value).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"{what} cannot be encoded as JSON: {exc}") from exc


def decode_json(data: bytes) -> Any:
    return json.loads(data)


_field_names: dict[type, tuple[str, ...]] = {}
"""Field names of each dataclass state type seen, in declaration order."""


class JsonCodec:
    """The default codec: a dataclass's fields (or a dict) as a JSON object."""

    name = "json"

    def encode(self, state: Any) -> bytes:
        names = _field_names.get(type(state))
        if names is None and dataclasses.is_dataclass(state) and not isinstance(state, type):
            names = _field_names[type(state)] = tuple(f.name for f in dataclasses.fields(state))
        if names is not None:
            value: Any = {name: getattr(state, name) for name in names}
        elif isinstance(state, dict):
            value = state
        else:
            raise SerializationError(
                f"state must be a dataclass instance or a dict, got {type(state).__name__}"
            )
        return encode_json(value, "state")

    def decode(self, data: bytes, state_type: type[Any]) -> Any:
        value = json.loads(data)
        if not isinstance(value, dict):
            raise ValueError("stored state is not a JSON object")
        if state_type is dict:
            return value
        return state_type(**value)


def pack_record(seq: int, idempotency_count: int, codec: str, payload: bytes, owner: str) -> bytes:
    """``StateRecord(...).encode()`` without building the record (the commit path)."""
    name = codec.encode("ascii")
    owner_bytes = owner.encode("utf-8")
    header = _HEADER.pack(_MAGIC, _FORMAT, seq, idempotency_count, len(name), len(owner_bytes))
    return b"".join((header, name, owner_bytes, payload))


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The decoded envelope: commit sequence, idempotency count, codec payload."""

    seq: int
    idempotency_count: int
    codec: str
    payload: bytes
    owner: str = ""

    def encode(self) -> bytes:
        return pack_record(self.seq, self.idempotency_count, self.codec, self.payload, self.owner)

    @classmethod
    def decode(cls, data: bytes, what: str) -> StateRecord:
        """Parse an envelope; anything malformed raises CorruptStateError naming ``what``."""
        try:
            magic, fmt, seq, count, name_len, owner_len = _HEADER.unpack_from(data)
        except struct.error as exc:
            raise CorruptStateError(f"stored state of {what} is truncated") from exc
        if magic != _MAGIC:
            raise CorruptStateError(f"stored state of {what} is not a kelpie state record")
        if fmt != _FORMAT:
            raise CorruptStateError(
                f"stored state of {what} has format {fmt}; this kelpie reads format {_FORMAT}"
            )
        start = _HEADER.size
        end = start + name_len + owner_len
        if len(data) < end:
            raise CorruptStateError(f"stored state of {what} is truncated")
        try:
            codec = data[start : start + name_len].decode("ascii")
            owner = data[start + name_len : end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptStateError(f"stored state of {what} has a malformed header") from exc
        return cls(seq, count, codec, data[end:], owner)
