"""Backend options: merge URL query and keyword arguments, convert, reject unknowns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kelpie.errors import ConfigError

__all__ = ["as_bool", "as_float", "as_int", "as_size", "as_str", "merge_options"]

Converter = Callable[[object], Any]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1024**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1024**4,
}


def as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true or false, got {value!r}")


def as_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(f"expected an integer, got {value!r}")


def as_float(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"expected a number, got {value!r}")


def as_size(value: object) -> int:
    """Bytes, as an int or a string such as ``"64MiB"`` or ``"1g"``."""
    if isinstance(value, str):
        text = value.strip().lower()
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits) :]
        if unit not in _SIZE_UNITS or not digits:
            raise ValueError(f"expected a size such as 1048576 or 64MiB, got {value!r}")
        return int(digits) * _SIZE_UNITS[unit]
    return as_int(value)


def as_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {value!r}")


def merge_options(
    scheme: str,
    from_url: Mapping[str, str],
    from_kwargs: Mapping[str, object],
    known: Mapping[str, Converter],
) -> dict[str, Any]:
    """URL options overridden by keyword options, each converted; unknown names raise.

    The error names the bad option and lists the known ones; it never echoes a
    value of an option called ``password``.
    """
    merged: dict[str, object] = {**from_url, **from_kwargs}
    result: dict[str, Any] = {}
    for name, raw in merged.items():
        if name not in known:
            raise ConfigError(
                f"unknown option {name!r} for {scheme}://; known options: "
                + ", ".join(sorted(known))
            )
        try:
            result[name] = known[name](raw)
        except (TypeError, ValueError) as exc:
            detail = "" if "password" in name else f": {exc}"
            raise ConfigError(f"bad value for option {name!r} of {scheme}://{detail}") from None
    return result
