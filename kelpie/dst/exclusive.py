"""One activation at a time: a watch on every handler the simulation registers.

The runtime's contract is that invocations of one actor run one at a time in
one runtime -- across deactivation, idle eviction and lease loss too. Most
breaches of it are invisible to storage invariants (the fence turns the
second writer's commit into a conflict), so the harness watches for the
breach itself: ``watched(actor_cls)`` is a subclass whose handlers note, per
simulated process and actor, how many of them are running, and report a
violation when a second one starts while the first has not finished.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from kelpie.actor.actor import Actor, handlers_of
from kelpie.dst.process import PROCESS
from kelpie.identity import ActorId

__all__ = ["WATCH", "Watch", "watched"]


class Watch:
    """The handlers running now, per (process number, actor); ``report`` gets each breach."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.running: dict[tuple[int, ActorId], list[str]] = {}


WATCH: contextvars.ContextVar[Watch | None] = contextvars.ContextVar(
    "kelpie_dst_watch", default=None
)
"""The current seed's watch (set by ``run_seed``; handlers outside a simulation ignore it)."""

_watched: dict[type[Actor[Any]], type[Actor[Any]]] = {}

Handler = Callable[[Any, Any, Any], Coroutine[Any, Any, Any]]


def _wrap(name: str, original: Handler) -> Handler:
    @functools.wraps(original)
    async def handler(self: Any, ctx: Any, payload: Any) -> Any:
        watch = WATCH.get()
        process = PROCESS.get()
        if watch is None or process is None:
            return await original(self, ctx, payload)
        key = (process.number, ctx.actor_id)
        running = watch.running
        others = running.get(key)
        if others:
            watch.report(
                f"{ctx.actor_id}: {name} started in process {process.number} while "
                f"{others[0]} was still running there: two activations of one actor at once"
            )
            others.append(name)
        else:
            others = running[key] = [name]
        try:
            return await original(self, ctx, payload)
        finally:
            others.remove(name)
            if not others and running.get(key) is others:
                del running[key]

    return handler


def watched(actor_cls: type[Actor[Any]]) -> type[Actor[Any]]:
    """``actor_cls`` with every handler watched (one subclass per class, cached)."""
    cls = _watched.get(actor_cls)
    if cls is None:
        members: dict[str, Any] = {
            name: _wrap(name, getattr(actor_cls, name)) for name in handlers_of(actor_cls)
        }
        members["__qualname__"] = actor_cls.__qualname__
        members["__module__"] = actor_cls.__module__
        cls = _watched[actor_cls] = type(actor_cls.__name__, (actor_cls,), members)
    return cls
