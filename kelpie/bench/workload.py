"""The benchmark's actor, and kelpie's side of a measurement.

One invocation of ``BenchActor.write`` changes the actor's state and writes
``keys`` KV keys; the runtime commits all of it as one storage transaction
that reads the state record first. ``KelpieSide`` drives a real ``Runtime`` on
a storage, remembers every actor it touched and deletes them (``delete_actor``) at the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kelpie.actor import Actor, ActorContext, ActorId
from kelpie.bench.timing import Call
from kelpie.errors import UnsupportedOperationError
from kelpie.runtime import Runtime
from kelpie.storage import Storage, lifecycle

__all__ = [
    "BenchActor",
    "BenchState",
    "KelpieSide",
    "delete_actor_keys",
    "kv_key",
    "read_batch_stats",
]

_KEYS = [b"k%d" % i for i in range(1000)]


def kv_key(index: int) -> bytes:
    """The name of the ``index``-th key an invocation writes."""
    return _KEYS[index] if index < len(_KEYS) else b"k%d" % index


@dataclass
class BenchState:
    n: int = 0


class BenchActor(Actor[BenchState]):
    """A counter that writes its new value to ``payload`` KV keys."""

    state_type = BenchState

    async def write(self, ctx: ActorContext[BenchState], payload: int) -> None:
        ctx.state.n += 1
        value = b"%d" % ctx.state.n
        for index in range(payload):
            await ctx.kv_set(kv_key(index), value)


class KelpieSide:
    """Invocations through a ``Runtime`` on ``storage``, actors ``namespace/{tag}{i}``."""

    def __init__(self, storage: Storage, namespace: str, tag: str) -> None:
        self.storage = storage
        self.namespace = namespace
        self.tag = tag
        self.runtime = Runtime(storage)
        self.runtime.register(namespace, BenchActor)
        self._touched: set[int] = set()

    def actor(self, index: int) -> ActorId:
        return ActorId(self.namespace, f"{self.tag}{index}")

    def calls(self, concurrency: int, keys: int) -> list[Call]:
        """One call per actor ``0..concurrency-1``, each invoking ``write`` with ``keys``."""
        return self.calls_for(range(concurrency), keys)

    def calls_for(self, actors: Iterable[int], keys: int) -> list[Call]:
        """One call per actor number in ``actors``, each invoking ``write`` with ``keys``."""
        numbers = list(actors)
        self._touched.update(numbers)
        return [self._call(self.actor(i), keys) for i in numbers]

    def _call(self, actor: ActorId, keys: int) -> Call:
        invoke = self.runtime.invoke

        async def once() -> None:
            await invoke(actor, "write", keys)

        return once

    def batch_stats(self) -> tuple[int, int] | None:
        """``(batches, items)`` of the storage's group commit, if it reports them."""
        return read_batch_stats(self.storage)

    async def close(self) -> None:
        """Close the runtime, then delete every key of every actor this side used."""
        try:
            await self.runtime.close()
        finally:
            for index in sorted(self._touched):
                await delete_actor_keys(self.storage, self.actor(index))


def read_batch_stats(storage: object) -> tuple[int, int] | None:
    """``storage.batch_stats`` as ``(batches, items)`` (an attribute or a method), else None."""
    stats = getattr(storage, "batch_stats", None)
    if callable(stats):
        stats = stats()
    if stats is None:
        return None
    try:
        batches, items = stats
        return int(batches), int(items)
    except (TypeError, ValueError):
        return None


async def delete_actor_keys(storage: Storage, actor: ActorId) -> None:
    """Delete every record of ``actor``: ``delete_actor`` where the backend has it.

    ``delete_actor`` leaves nothing of the actor, not even the version a backend
    keeps for it; a backend written before it has its keys deleted in one
    transaction instead.
    """
    try:
        await lifecycle.delete_actor(storage, actor)
        return
    except UnsupportedOperationError:
        pass
    async with storage.transaction(actor) as txn:
        for key in await txn.list_keys():
            await txn.delete(key)
