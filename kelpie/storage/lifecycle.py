"""Reaching the data-lifecycle methods of any backend: ``list_actors``, ``delete_actor``.

The ``Storage`` protocol gained ``list_actors`` and ``delete_actor`` after
third-party backends were written against it. Those backends keep working for
everything else; code that needs the new methods (the runtime's
``delete_actor``, the ``kelpie actors/delete/copy/verify`` commands) calls them
through this module, which raises ``UnsupportedOperationError`` naming the
backend's scheme and the method instead of an ``AttributeError``.

Order: every built-in backend lists actors in ``ActorId`` order (namespace,
then id, compared by code point -- the same as comparing their UTF-8 bytes),
so ``after`` means "strictly greater than" and a listing can resume from the
last id it printed, on any backend.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

from kelpie.errors import UnsupportedOperationError
from kelpie.identity import ActorId

__all__ = [
    "DEFAULT_PAGE",
    "check_list_arguments",
    "delete_actor",
    "iter_actors",
    "list_actors",
    "note_scheme",
    "require",
    "scheme_of",
    "supports",
    "unsupported",
]

DEFAULT_PAGE = 1000
"""``list_actors``'s default ``limit``."""

MAX_PAGE = 100_000
"""The largest ``limit`` a backend must accept."""

_schemes: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def note_scheme(storage: object, scheme: str) -> None:
    """Remember which URL scheme opened ``storage`` (``open_storage`` calls this)."""
    with contextlib.suppress(TypeError):  # not weak-referenceable: the class name will do
        _schemes[storage] = scheme


def scheme_of(storage: object) -> str:
    """The scheme that opened ``storage`` (``redis``, ``lmdb``, ...), else its class name.

    A wrapper (an object with an ``inner`` storage) is named after what it wraps.
    """
    seen: set[int] = set()
    current: object = storage
    while id(current) not in seen:
        seen.add(id(current))
        try:
            return _schemes[current]
        except (KeyError, TypeError):
            pass
        inner = getattr(current, "inner", None)
        if inner is None:
            break
        current = inner
    return type(storage).__name__


def supports(storage: object, method: str) -> bool:
    """True when ``storage`` has a callable ``method`` (``list_actors``, ``delete_actor``)."""
    return callable(getattr(storage, method, None))


def require(storage: object, method: str) -> None:
    """Raise ``UnsupportedOperationError`` unless ``storage`` has ``method``
    (check before starting work that would need it)."""
    if not supports(storage, method):
        raise unsupported(storage, method)


def unsupported(storage: object, method: str) -> UnsupportedOperationError:
    return UnsupportedOperationError(
        f"the {scheme_of(storage)} backend does not implement {method}() "
        f"(it was written before the Storage protocol had it); "
        f"everything else works on it"
    )


def check_list_arguments(namespace: str | None, after: ActorId | None, limit: int) -> None:
    """Validate ``list_actors`` arguments alike on every backend (``TypeError``, ``ValueError``)."""
    if namespace is not None:
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str or None, got {type(namespace).__name__}")
        ActorId(namespace, "x")  # raises InvalidActorIdError for an empty or long namespace
    if after is not None and not isinstance(after, ActorId):
        raise TypeError(f"after must be an ActorId or None, got {type(after).__name__}")
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, got {type(limit).__name__}")
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE:,}, got {limit}")


async def list_actors(
    storage: object,
    namespace: str | None = None,
    *,
    after: ActorId | None = None,
    limit: int = DEFAULT_PAGE,
) -> list[ActorId]:
    """``storage.list_actors(...)``, or ``UnsupportedOperationError`` if it has none."""
    method = getattr(storage, "list_actors", None)
    if not callable(method):
        raise unsupported(storage, "list_actors")
    result: list[ActorId] = await method(namespace, after=after, limit=limit)
    return result


async def delete_actor(storage: object, actor: ActorId) -> None:
    """``storage.delete_actor(actor)``, or ``UnsupportedOperationError`` if it has none."""
    method = getattr(storage, "delete_actor", None)
    if not callable(method):
        raise unsupported(storage, "delete_actor")
    await method(actor)


async def iter_actors(
    storage: object,
    namespace: str | None = None,
    *,
    after: ActorId | None = None,
    page: int = DEFAULT_PAGE,
) -> AsyncIterator[ActorId]:
    """Every actor of ``storage`` (of ``namespace``), page by page, from after ``after``."""
    while True:
        ids = await list_actors(storage, namespace, after=after, limit=page)
        for actor in ids:
            yield actor
        if len(ids) < page:
            return
        after = ids[-1]
