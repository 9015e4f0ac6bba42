"""Typed JSON for actor state, on msgspec (ADR 0016).

A state class's fields are written as a JSON object in declaration order;
nested dataclasses, containers of them, ``Optional``/unions, ``Enum``,
``datetime``/``date``/``time`` (an aware value keeps its UTC offset), ``UUID``,
``Decimal`` (as a string), ``bytes`` (base64) and ``Literal`` are written in
msgspec's JSON forms and read back as the declared types.

Reading validates everything against the declared types. msgspec ignores
unknown fields of dataclasses, so each state type also gets a *checker*: a
mirror of it in which every dataclass is a ``msgspec.Struct`` with
``forbid_unknown_fields`` and the dataclass's defaults; bytes are checked
with it, and what it decoded becomes the dataclasses (``msgspec.convert``).
Writing checks the freshly encoded bytes the same way, so a
handler that put a ``str`` into an ``int`` field gets a ``SerializationError``
and nothing is stored, instead of an actor that can no longer load.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from kelpie.errors import SerializationError

__all__ = ["StateTypeError", "TypedJson", "describe", "encode_value"]

_WHERE = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>.*)`)?$", re.DOTALL)
_FIELD = re.compile(r"^Object (?P<what>missing required|contains unknown) field `(?P<name>.*)`$")
_NON_FINITE = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")
"""A msgpack float64 whose exponent bits are all ones: an infinity or a NaN."""


class StateTypeError(ValueError):
    """Stored state does not match the declared type; ``str()`` is ``path: what is wrong``."""


def describe(exc: msgspec.ValidationError) -> str:
    """``owner.since: expected datetime, got int`` from msgspec's message."""
    match = _WHERE.match(str(exc))
    assert match is not None  # the pattern matches any text
    message, path = match["message"], (match["path"] or "").lstrip(".")
    field = _FIELD.match(message)
    if field is not None:
        name = f"{path}.{field['name']}" if path else field["name"]
        if field["what"] == "missing required":
            return f"{name}: missing, and the field has no default"
        return f"{name}: unknown field (not declared by the state class)"
    text = message.replace("`", "")
    return f"{path or '(the state)'}: {text[:1].lower()}{text[1:]}"


def _mirror(tp: Any, active: set[type]) -> Any:
    """``tp`` with every dataclass replaced by a Struct that forbids unknown fields."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if tp in active:
            raise TypeError(
                f"{tp.__name__} contains itself; recursive state types are not supported"
            )
        active.add(tp)
        hints = typing.get_type_hints(tp, include_extras=True)
        fields: list[Any] = []
        for field in dataclasses.fields(tp):
            mirrored = _mirror(hints[field.name], active)
            if field.default is not dataclasses.MISSING:
                fields.append((field.name, mirrored, field.default))
            elif field.default_factory is not dataclasses.MISSING:
                factory = msgspec.field(default_factory=field.default_factory)
                fields.append((field.name, mirrored, factory))
            else:
                fields.append((field.name, mirrored))
        active.discard(tp)
        # kw_only: a required field may follow one with a default, as in a dataclass.
        return msgspec.defstruct(
            f"{tp.__name__}Check", fields, forbid_unknown_fields=True, kw_only=True, frozen=True
        )
    origin = typing.get_origin(tp)
    if origin is None:
        return tp
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return tp
    if origin is typing.Annotated:
        return typing.Annotated[_mirror(args[0], active), *args[1:]]
    mirrored_args = tuple(arg if arg is Ellipsis else _mirror(arg, active) for arg in args)
    if origin is typing.Union or origin is types.UnionType:
        return typing.Union[mirrored_args]  # noqa: UP007 - built from a tuple
    return origin[mirrored_args]


_UNTYPED = (Any, object, list, dict, tuple, set, frozenset)


def _may_hide_non_finite(tp: Any, seen: set[Any]) -> bool:
    """Whether a NaN somewhere in a ``tp`` could be written as ``null`` and read back
    without an error (a float in an optional or an untyped place). Elsewhere the
    check after encoding refuses the ``null`` itself."""
    if tp in _UNTYPED:
        return True
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if tp in seen:
            return False
        seen.add(tp)
        hints = typing.get_type_hints(tp)
        return any(_may_hide_non_finite(hints[f.name], seen) for f in dataclasses.fields(tp))
    origin = typing.get_origin(tp)
    if origin is None or origin is typing.Literal:
        return False
    args = [arg for arg in typing.get_args(tp) if arg is not Ellipsis]
    if (
        (origin is typing.Union or origin is types.UnionType)
        and type(None) in args
        and any(isinstance(arg, type) and issubclass(arg, float) for arg in args)
    ):
        return True
    return any(_may_hide_non_finite(arg, seen) for arg in args)


def _has_non_finite(value: Any) -> bool:
    """Whether ``value`` holds a NaN or an infinity (JSON would write them as null)."""
    try:
        packed = msgspec.msgpack.encode(value)
    except (msgspec.EncodeError, OverflowError, TypeError):
        return _walk_non_finite(value)  # an int beyond 64 bits: msgpack cannot hold it
    return _NON_FINITE.search(packed) is not None and _walk_non_finite(value)


def _walk_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(_walk_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_walk_non_finite(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_walk_non_finite(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


_encoder = msgspec.json.Encoder()


class TypedJson:
    """Encodes and decodes one state type; built once per type (``for_type``)."""

    __slots__ = ("_check", "_guard_nan", "state_type")

    _cache: typing.ClassVar[dict[Any, TypedJson]] = {}

    def __init__(self, state_type: Any) -> None:
        self.state_type = state_type
        try:
            self._check: Callable[[bytes], Any] = msgspec.json.Decoder(
                _mirror(state_type, set())
            ).decode
            self._guard_nan = _may_hide_non_finite(state_type, set())
        except (TypeError, NameError) as exc:
            name = getattr(state_type, "__name__", repr(state_type))
            raise SerializationError(f"state type {name} is not supported: {exc}") from exc

    @classmethod
    def for_type(cls, state_type: Any) -> TypedJson:
        codec = cls._cache.get(state_type)
        if codec is None:
            codec = cls._cache[state_type] = cls(state_type)
        return codec

    def decode(self, data: bytes) -> Any:
        """The state in ``data``; a mismatch raises ``StateTypeError`` naming the field path.

        The checked mirror (every default filled in) becomes the dataclasses by
        ``msgspec.convert``, which is faster than decoding the bytes a second time.
        """
        try:
            checked = self._check(data)
        except msgspec.ValidationError as exc:
            raise StateTypeError(describe(exc)) from exc
        except msgspec.DecodeError as exc:
            raise StateTypeError(f"(the state): not JSON: {exc}") from exc
        try:
            return msgspec.convert(checked, self.state_type, from_attributes=True)
        except msgspec.ValidationError as exc:  # pragma: no cover - checked above
            raise StateTypeError(describe(exc)) from exc

    def encode(self, state: Any) -> bytes:
        """JSON of ``state``, checked against the declared types; else ``SerializationError``."""
        if not isinstance(state, self.state_type):
            raise SerializationError(
                f"state must be a {getattr(self.state_type, '__name__', self.state_type)}, "
                f"got {type(state).__name__}"
            )
        data = encode_value(state, self._guard_nan)
        try:
            self._check(data)
        except msgspec.ValidationError as exc:
            problem = describe(exc)
            if problem.endswith("got null"):
                problem += " (a NaN or an infinity is written as null)"
            raise SerializationError(f"state cannot be stored: {problem}") from exc
        return data


def encode_value(value: Any, guard_nan: bool = True) -> bytes:
    """msgspec's JSON of ``value``; what JSON cannot hold raises ``SerializationError``."""
    try:
        data = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        raise SerializationError(f"state cannot be encoded as JSON: {exc}") from exc
    if guard_nan and b"null" in data and _has_non_finite(value):
        raise SerializationError("state cannot be encoded as JSON: it holds a NaN or an infinity")
    return data
