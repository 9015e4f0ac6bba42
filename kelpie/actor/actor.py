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
    """

    state_type: ClassVar[type[Any]] = dict

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
