"""``Actor``: the base class of user actors, and handler discovery."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if TYPE_CHECKING:
    from kelpie.actor.context import ActorContext

__all__ = ["Actor", "Handler", "handlers_of"]

S = TypeVar("S")

Handler = Callable[[Any, Any], Awaitable[Any]]
"""A bound handler: ``await handler(ctx, payload)``."""

_HOOKS = frozenset({"on_activate", "on_deactivate"})


class Actor(Generic[S]):
    """Base class of an actor type.

    Handlers are the public ``async def`` methods taking ``(self, ctx, payload)``;
    payloads and results are JSON-serialisable. ``state_type`` (a dataclass, or
    ``dict``) is instantiated with no arguments for an actor that has no
    stored state yet.

    ``state_version`` numbers the shape of ``state_type``: raise it when the
    shape changes, and teach ``migrate_state`` to take a stored document one
    version up (docs/state.md).
    """

    state_type: ClassVar[type[Any]] = dict
    state_version: ClassVar[int] = 1

    @classmethod
    def migrate_state(cls, from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        """Return ``data``, stored at ``from_version``, as version ``from_version + 1``.

        ``data`` is the stored JSON object as plain values (nested objects are
        dicts, a ``datetime`` is its ISO string); the result may hold either
        plain values or the declared types. The runtime calls this once per
        version step (1 -> 2 -> 3) and validates the last result against
        ``state_type``. The default changes nothing: enough when a version only
        added fields that have defaults.
        """
        return data

    async def on_activate(self, ctx: ActorContext[S]) -> None:
        """Called once after the state is loaded, before the first handler."""

    async def on_deactivate(self, ctx: ActorContext[S]) -> None:
        """Called before the actor leaves memory (explicitly, when idle, or on close)."""


_handler_cache: dict[type[Any], frozenset[str]] = {}


def handlers_of(actor_cls: type[Actor[Any]]) -> frozenset[str]:
    """Names of ``actor_cls``'s handlers: public coroutine methods, hooks excluded."""
    names = _handler_cache.get(actor_cls)
    if names is None:
        names = frozenset(
            name
            for name, member in inspect.getmembers(actor_cls, inspect.iscoroutinefunction)
            if not name.startswith("_") and name not in _HOOKS
        )
        _handler_cache[actor_cls] = names
    return names


def overrides_hook(actor_cls: type[Actor[Any]], name: str) -> bool:
    """Whether ``actor_cls`` defines its own ``on_activate``/``on_deactivate``."""
    return getattr(actor_cls, name) is not getattr(Actor, name)
