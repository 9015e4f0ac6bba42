"""``Runtime``: registers actor types and routes invocations to their mailboxes."""

from __future__ import annotations

import asyncio
import logging
import math
import random
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from kelpie.actor.actor import Actor, handlers_of
from kelpie.actor.codec import JsonCodec, StateCodec, encode_json
from kelpie.errors import (
    ActorActiveElsewhereError,
    ConfigError,
    RuntimeClosedError,
    UnknownActorTypeError,
    UnknownOperationError,
)
from kelpie.identity import ActorId
from kelpie.messaging.clock import ReminderClock, WallAnchoredClock
from kelpie.messaging.reentrancy import CURRENT, check_reentrant
from kelpie.messaging.service import Services
from kelpie.runtime.activation import IDEMPOTENCY_WINDOW, Activation
from kelpie.runtime.idempotency import Idempotency
from kelpie.runtime.lease import Leases, stored_lease
from kelpie.runtime.mailbox import Mailbox
from kelpie.runtime.retry import ConflictRetry
from kelpie.storage import lifecycle
from kelpie.storage.protocol import Storage

if TYPE_CHECKING:
    from kelpie.messaging.calls import Special
    from kelpie.messaging.inbox import Arrival

__all__ = ["Runtime"]

log = logging.getLogger("kelpie.runtime")


def _log_failed_eviction(stopped: asyncio.Future[None]) -> None:
    """Nobody awaits an idle eviction: retrieve (and log) its failure here."""
    if not stopped.cancelled() and stopped.exception() is not None:
        log.warning("idle deactivation failed", exc_info=stopped.exception())


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return float(value)


class Runtime:
    """Hosts virtual actors on a ``Storage``; every invocation is one transaction.

    Invocations of one actor run one at a time in arrival order; different
    actors run concurrently. ``close()`` drains in-flight invocations and
    deactivates every actor; it does not close the storage it was given.

    ``conflict_retries=N`` runs an invocation up to N more times when its
    commit conflicted before anything of it was stored, after a jittered delay
    drawn from ``rng`` (a private ``random.Random()`` if none is given) and
    waited on the event loop's clock; the default 0 hands every conflict to
    the caller.

    ``reminder_clock`` is what reminders' due times are stored in: by default
    the event loop's clock anchored once to the wall clock (seconds since the
    epoch, so runtimes on other hosts and after a reboot agree);
    ``kelpie.messaging.clock.loop_time`` runs them on the loop's clock alone
    (the simulator does: virtual time).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        invocation_timeout: float = 30.0,
        node_id: str | None = None,
        lease_seconds: float = 10.0,
        idle_timeout: float | None = 300.0,
        mailbox_size: int = 1024,
        codec: StateCodec | None = None,
        idempotency_window: int = IDEMPOTENCY_WINDOW,
        conflict_retries: int = 0,
        rng: random.Random | None = None,
        reminder_clock: ReminderClock | None = None,
    ) -> None:
        self.storage = storage
        self.invocation_timeout = _positive("invocation_timeout", invocation_timeout)
        self.lease_seconds = _positive("lease_seconds", lease_seconds)
        if idle_timeout is not None:
            idle_timeout = _positive("idle_timeout", idle_timeout)
        self.idle_timeout = idle_timeout
        if isinstance(mailbox_size, bool) or not isinstance(mailbox_size, int) or mailbox_size < 1:
            raise ConfigError(f"mailbox_size must be a positive int, got {mailbox_size!r}")
        self.mailbox_size = mailbox_size
        if (
            isinstance(idempotency_window, bool)
            or not isinstance(idempotency_window, int)
            or idempotency_window < 1
        ):
            raise ConfigError(
                f"idempotency_window must be a positive int, got {idempotency_window!r}"
            )
        self.idempotency_window = idempotency_window
        """How many of each actor's most recent idempotency keys are remembered."""
        if (
            isinstance(conflict_retries, bool)
            or not isinstance(conflict_retries, int)
            or conflict_retries < 0
        ):
            raise ConfigError(f"conflict_retries must be an int >= 0, got {conflict_retries!r}")
        if rng is not None and not isinstance(rng, random.Random):
            raise ConfigError(f"rng must be a random.Random, got {type(rng).__name__}")
        self.conflict_retries = conflict_retries
        """How many times an invocation whose commit conflicted runs again (``retry.py``)."""
        self._retry = (
            ConflictRetry(conflict_retries, rng if rng is not None else random.Random())
            if conflict_retries > 0
            else None
        )
        if node_id is not None and (
            not isinstance(node_id, str) or not 0 < len(node_id.encode("utf-8", "replace")) < 256
        ):
            raise ConfigError(f"node_id must be a str of 1-255 UTF-8 bytes, got {node_id!r}")
        self.node_id = node_id
        self._leases = None if node_id is None else Leases(node_id, self.lease_seconds)
        # delete_actor respects other nodes' leases even on a runtime without a
        # node id: this watcher owns no lease, it only sees others' expire.
        self._lease_watch = self._leases if self._leases is not None else Leases("", lease_seconds)
        self.codec: StateCodec = codec if codec is not None else JsonCodec()
        self._types: dict[str, type[Actor[Any]]] = {}
        self._mailboxes: dict[ActorId, Mailbox] = {}
        self._exiting: dict[ActorId, asyncio.Task[None]] = {}
        self._deleting: dict[ActorId, asyncio.Task[None]] = {}
        """``delete_actor`` runs, by actor: a new activation starts after it ends."""
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        if reminder_clock is not None and not callable(reminder_clock):
            raise ConfigError(
                f"reminder_clock must be callable, got {type(reminder_clock).__name__}"
            )
        self._messaging = Services(
            self, clock=reminder_clock if reminder_clock is not None else WallAnchoredClock()
        )
        """Messages and reminders (``kelpie.messaging``): hooks and a background sweep."""

    def register(self, namespace: str, actor_cls: type[Actor[Any]]) -> None:
        """Actors whose ``ActorId.namespace`` is ``namespace`` are ``actor_cls`` instances."""
        if not isinstance(actor_cls, type) or not issubclass(actor_cls, Actor):
            raise TypeError(f"actor_cls must be an Actor subclass, got {actor_cls!r}")
        ActorId(namespace, "x")  # the namespace must be a valid id part
        self._types[namespace] = actor_cls
        self._start_messaging()

    def _start_messaging(self) -> None:
        """Start the reminders' and outboxes' sweep (on the first use inside a loop)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if not self._closed:
            self._messaging.start()

    async def _submit(self, actor_id: ActorId, special: Special) -> Any:
        """Run the runtime's own call ``special`` in the actor's mailbox (kelpie.messaging)."""
        actor_cls = self._types.get(actor_id.namespace)
        if actor_cls is None:
            raise UnknownActorTypeError(
                f"no actor type is registered for namespace {actor_id.namespace!r}"
            )
        return await self._mailbox(actor_id, actor_cls).submit("", None, None, special)

    def _arrive(self, actor_id: ActorId, arrival: Arrival) -> None:
        """Put a message in the actor's mailbox for its next transaction (kelpie.messaging)."""
        mailbox = self._mailboxes.get(actor_id)
        if mailbox is not None and not mailbox.stopping:  # _mailbox's first case, inline
            mailbox.arrive(arrival)
            return
        actor_cls = self._types.get(actor_id.namespace)
        if actor_cls is None:
            raise UnknownActorTypeError(
                f"no actor type is registered for namespace {actor_id.namespace!r}"
            )
        self._mailbox(actor_id, actor_cls).arrive(arrival)

    @property
    def active_actors(self) -> list[ActorId]:
        """The actors that have a mailbox right now, sorted."""
        return sorted(self._mailboxes)

    def _mailbox(self, actor_id: ActorId, actor_cls: type[Actor[Any]]) -> Mailbox:
        previous = self._mailboxes.get(actor_id)
        if previous is not None and not previous.stopping:
            return previous
        # A new activation starts only once the previous one has finished: every
        # invocation queued before its stop, its last commit and its deactivation
        # (its whole worker task), not merely once its worker left the map.
        after = self._deleting.get(actor_id)
        if after is None:
            after = previous.task if previous is not None else self._exiting.get(actor_id)
        activation = Activation(
            actor_id,
            actor_cls,
            self.storage,
            self.codec,
            self.invocation_timeout,
            self._leases,
            self.idempotency_window,
        )
        activation.services = self._messaging
        # The worker task copies the context now: its handlers see their own actor
        # (a self-invoke raises ReentrantCallError, kelpie/messaging/reentrancy.py).
        token = CURRENT.set((self, actor_id))
        try:
            mailbox = Mailbox(
                activation,
                capacity=self.mailbox_size,
                after=after,
                on_exit=self._on_exit,
                retry=self._retry,
            )
        finally:
            CURRENT.reset(token)
        self._mailboxes[actor_id] = mailbox
        if self._messaging._task is None:
            self._start_messaging()
        if self._sweeper is None:
            periods = []
            if self.idle_timeout is not None:
                periods.append(self.idle_timeout / 4)
            if self._leases is not None:
                periods.append(self._leases.renew_after / 2)
            if periods:
                self._sweeper = asyncio.get_running_loop().create_task(
                    self._sweep(min(periods)), name="kelpie-sweeper"
                )
        return mailbox

    async def _sweep(self, period: float) -> None:
        """Deactivate actors idle for ``idle_timeout`` and renew leases, on loop time."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for actor_id in sorted(self._mailboxes):
                mailbox = self._mailboxes[actor_id]
                if mailbox.stopping:
                    continue
                idle_since = mailbox.idle_since
                if (
                    self.idle_timeout is not None
                    and idle_since is not None
                    and now - idle_since >= self.idle_timeout
                ):
                    mailbox.stop().add_done_callback(_log_failed_eviction)
                elif (
                    self._leases is not None
                    and mailbox.activation.holds_lease()
                    and now - mailbox.activation.committed_at >= self._leases.renew_after
                ):
                    mailbox.renew()

    def _on_exit(self, mailbox: Mailbox) -> None:
        actor_id = mailbox.activation.actor_id
        if self._mailboxes.get(actor_id) is mailbox:
            del self._mailboxes[actor_id]
        self._exiting[actor_id] = mailbox.task
        mailbox.task.add_done_callback(lambda task: self._forget_exit(actor_id, task))

    def _forget_exit(self, actor_id: ActorId, task: asyncio.Task[None]) -> None:
        if self._exiting.get(actor_id) is task:
            del self._exiting[actor_id]

    async def invoke(
        self,
        actor_id: ActorId,
        operation: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        """Run ``operation`` on the actor (activating it first if needed); return its result."""
        if self._closed:
            raise RuntimeClosedError("the runtime is closed")
        if not isinstance(actor_id, ActorId):
            raise TypeError(f"actor_id must be an ActorId, got {type(actor_id).__name__}")
        actor_cls = self._types.get(actor_id.namespace)
        if actor_cls is None:
            raise UnknownActorTypeError(
                f"no actor type is registered for namespace {actor_id.namespace!r}"
            )
        if not isinstance(operation, str) or operation not in handlers_of(actor_cls):
            raise UnknownOperationError(
                f"{actor_cls.__name__} has no handler {operation!r}; handlers: "
                + ", ".join(sorted(handlers_of(actor_cls)))
            )
        check_reentrant(self, actor_id)
        if idempotency_key is not None and not isinstance(idempotency_key, str):
            raise TypeError(f"idempotency_key must be a str, got {type(idempotency_key).__name__}")
        payload_json = encode_json(payload, "payload")
        idempotency = (
            None
            if idempotency_key is None
            else Idempotency.of(idempotency_key, operation, payload_json)
        )
        # No shield: a caller that gives up cancels only its reply future; the
        # worker skips a call not yet started and finishes one already running.
        return await self._mailbox(actor_id, actor_cls).submit(operation, payload, idempotency)

    async def deactivate(self, actor_id: ActorId) -> None:
        """Deactivate the actor after its queued invocations; no-op if it is not active."""
        mailbox = self._mailboxes.get(actor_id)
        if mailbox is not None and not mailbox.stopping:
            await mailbox.stop()
        exiting = self._exiting.get(actor_id)
        if exiting is not None:
            await asyncio.shield(exiting)

    async def delete_actor(self, actor_id: ActorId) -> None:
        """Deactivate the actor and delete all its data; it starts afresh on its next call.

        Invocations queued before this call run first (and are deleted with the
        rest); invocations made once it has been called wait for the delete and
        find the default state. If another live node holds the actor's lease,
        nothing is deleted: ``ActorActiveElsewhereError`` names that node, as an
        invocation would. A backend without ``delete_actor`` raises
        ``UnsupportedOperationError`` naming it -- before anything is
        deactivated when the method is missing altogether, after the
        deactivation when the backend's method itself says it is unsupported.

        The lease check is advice, not a lock: a node that takes the actor
        between the check and the delete finds its next commit fenced out
        (``TransactionConflictError``; the store's versions never repeat) and
        reloads the actor from its default state, so old state never comes back.
        """
        if self._closed:
            raise RuntimeClosedError("the runtime is closed")
        if not isinstance(actor_id, ActorId):
            raise TypeError(f"actor_id must be an ActorId, got {type(actor_id).__name__}")
        lifecycle.require(self.storage, "delete_actor")
        before: list[asyncio.Future[Any]] = []
        mailbox = self._mailboxes.get(actor_id)
        if mailbox is not None:
            if not mailbox.stopping:
                before.append(mailbox.stop())
            before.append(mailbox.task)
        for task in (self._exiting.get(actor_id), self._deleting.get(actor_id)):
            if task is not None:
                before.append(task)
        task = asyncio.get_running_loop().create_task(
            self._delete_after(actor_id, before), name=f"kelpie-delete-{actor_id}"
        )
        self._deleting[actor_id] = task
        task.add_done_callback(lambda done: self._forget_delete(actor_id, done))
        await asyncio.shield(task)

    async def _delete_after(self, actor_id: ActorId, before: list[asyncio.Future[Any]]) -> None:
        if before:
            # How the previous activation ended (even by a failed deactivation)
            # does not matter; only that it ended. Retrieve its outcome here.
            await asyncio.gather(*before, return_exceptions=True)
        owner, seq = await stored_lease(self.storage, actor_id)
        if not self._lease_watch.may_take(actor_id, owner, seq):
            raise ActorActiveElsewhereError(
                f"actor {actor_id} is active on node {owner!r}; it was not deleted",
                owner=owner,
            )
        await lifecycle.delete_actor(self.storage, actor_id)
        self._lease_watch.forget(actor_id)

    def _forget_delete(self, actor_id: ActorId, task: asyncio.Task[None]) -> None:
        if self._deleting.get(actor_id) is task:
            del self._deleting[actor_id]
        if not task.cancelled():
            task.exception()  # retrieved: the caller of delete_actor got it

    async def close(self) -> None:
        """Drain in-flight invocations and deactivate every actor; idempotent."""
        self._closed = True
        await self._messaging.close()  # delivers what is pending first
        if self._sweeper is not None:
            self._sweeper.cancel()
        stops = [mb.stop() for mb in list(self._mailboxes.values()) if not mb.stopping]
        await asyncio.gather(*stops, return_exceptions=True)
        while self._exiting or self._deleting:
            running = [*self._exiting.values(), *self._deleting.values()]
            await asyncio.gather(*running, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
