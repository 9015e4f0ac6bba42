"""Simulated application processes: a runtime, its storage handle, the tasks it owns.

A ``Process`` is one incarnation of an application process: a runtime under
test (``RuntimeKind``) built on the process's own ``FaultyStorage`` handle.
Every asyncio task started on its behalf -- mailbox workers, the sweeper,
commit batches -- is attributed to it through a context variable and the
loop's task factory (``task_factory``), so a crash can cancel exactly that
process's work without any cleanup running, as a real crash would.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from kelpie.actor.actor import Actor
from kelpie.dst.faults import FaultyStorage
from kelpie.dst.inspect import Inspector, KelpieInspector
from kelpie.dst.naive import NaiveInspector, NaiveRuntime
from kelpie.identity import ActorId
from kelpie.messaging.clock import loop_time
from kelpie.storage.protocol import Storage

__all__ = [
    "PROCESS",
    "RUNTIMES",
    "AttemptTimeoutError",
    "Process",
    "ProcessCrashedError",
    "RuntimeKind",
    "RuntimeLike",
    "RuntimeOptions",
    "kelpie_runtime",
    "task_factory",
]


class ProcessCrashedError(Exception):
    """The simulated process died while serving the call: its outcome is unknown."""


class AttemptTimeoutError(Exception):
    """The client stopped waiting for a paused process: the attempt's outcome is unknown.

    The attempt is not cancelled inside the process: it may still commit later.
    """


class RuntimeLike(Protocol):
    """What the harness needs of a runtime (``kelpie.runtime.Runtime`` has it)."""

    def register(self, namespace: str, actor_cls: type[Actor[Any]]) -> None: ...

    async def invoke(
        self,
        actor_id: ActorId,
        operation: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class RuntimeOptions:
    """How the harness configures each runtime it starts."""

    invocation_timeout: float
    node_id: str | None = None
    lease_seconds: float = 10.0
    idle_timeout: float | None = None
    idempotency_window: int = 1000


def kelpie_runtime(
    storage: Storage, options: RuntimeOptions, runtime_cls: type[Any] | None = None
) -> RuntimeLike:
    """A ``kelpie.runtime.Runtime`` (or subclass ``runtime_cls``) configured by ``options``."""
    if runtime_cls is None:
        from kelpie.runtime import Runtime

        runtime_cls = Runtime
    runtime: RuntimeLike = runtime_cls(
        storage,
        invocation_timeout=options.invocation_timeout,
        node_id=options.node_id,
        lease_seconds=options.lease_seconds,
        idle_timeout=options.idle_timeout,
        idempotency_window=options.idempotency_window,
        reminder_clock=loop_time,  # virtual time, no wall-clock anchor: seeds replay exactly
    )
    return runtime


def _naive_runtime(storage: Storage, options: RuntimeOptions) -> RuntimeLike:
    return NaiveRuntime(storage, invocation_timeout=options.invocation_timeout)


@dataclass(frozen=True)
class RuntimeKind:
    """A runtime under test: how to start one, and how to read what it stored.

    ``cluster``: the runtime supports what the topology varies -- several
    runtimes on one store, ``node_id``/leases, ``idle_timeout``,
    ``idempotency_window``, ``deactivate(actor)`` and ``active_actors``
    (``kelpie.runtime.Runtime`` does). Without it every seed runs one runtime
    with no leases, no idle eviction and no random deactivations.
    """

    name: str
    factory: Callable[[Storage, RuntimeOptions], RuntimeLike]
    inspector: Inspector
    cluster: bool = True


RUNTIMES: dict[str, RuntimeKind] = {
    "kelpie": RuntimeKind("kelpie", kelpie_runtime, KelpieInspector()),
    "naive": RuntimeKind("naive", _naive_runtime, NaiveInspector(), cluster=False),
}
"""Runtimes ``--runtime`` can name; tests may add their own (a planted bug)."""

PROCESS: contextvars.ContextVar[Process | None] = contextvars.ContextVar(
    "kelpie_dst_process", default=None
)
"""Which simulated process a task belongs to (inherited by the tasks it creates)."""


class Process:
    """One incarnation of an application process: a runtime and its tasks."""

    def __init__(
        self,
        number: int,
        slot: int,
        storage: FaultyStorage,
        node_id: str | None,
        factory: Callable[[], RuntimeLike],
    ) -> None:
        self.number = number
        """Unique per run: incarnations are numbered 1, 2, ... in start order."""
        self.slot = slot
        """Which of the topology's runtime places this incarnation fills."""
        self.storage = storage
        self.node_id = node_id
        self.dead = False
        self.tasks: dict[asyncio.Task[Any], None] = {}
        self.callers: dict[asyncio.Task[Any], int] = {}
        """Client tasks inside a call to this process right now -> their attempt number."""
        self.crash_cancelled: set[asyncio.Task[Any]] = set()
        self.timed_out: set[asyncio.Task[Any]] = set()
        self.started: dict[int, float] = {}
        """Attempt number -> loop time it started, for attempts in flight here."""
        self.stranded: list[ActorId] = []
        """Keyed attempts abandoned here by a client timeout: open until this process dies."""
        self.stale: set[ActorId] = set()
        """Actors active here when the process last resumed from a pause (zombie activations)."""
        self.context = contextvars.copy_context()
        self.context.run(PROCESS.set, self)
        # Built inside the process's context, so any task it starts is the process's.
        self.runtime: RuntimeLike = self.context.run(factory)

    def __repr__(self) -> str:
        return f"<process {self.number} slot {self.slot} node {self.node_id}>"

    def active_actors(self) -> list[ActorId]:
        """The actors the runtime holds right now (empty if it cannot tell)."""
        actors: list[ActorId] = getattr(self.runtime, "active_actors", [])
        return actors


def task_factory(
    loop: asyncio.AbstractEventLoop,
    coro: Coroutine[Any, Any, Any],
    context: contextvars.Context | None = None,
) -> asyncio.Task[Any]:
    """The loop's task factory: a task started inside a process belongs to it."""
    task = asyncio.Task(coro, loop=loop, context=context)
    process = context.get(PROCESS) if context is not None else PROCESS.get()
    if process is not None:
        if process.dead:
            task.cancel()
        else:
            process.tasks[task] = None
            task.add_done_callback(lambda t: process.tasks.pop(t, None))
    return task
