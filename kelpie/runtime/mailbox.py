"""One mailbox per actor: invocations run one at a time, in arrival order.

A mailbox is a bounded queue (a deque and the worker's one wake-up future,
lighter than ``asyncio.Queue`` on this per-invocation path) drained by one
worker task. The worker owns the actor's ``Activation``: it loads it on first
use, runs each invocation to the end (a caller that gives up does not cancel
a commit half-way), and when told to stop — explicitly, on close, or by the
runtime's idle sweep — it deactivates the actor and exits. With
``conflict_retries`` the worker also runs an invocation again after a
conflict that stored nothing, before the next invocation starts, so the
actor's order holds across retries (``retry.py``).

Messages from other actors (``kelpie.messaging``) wait beside the queue in
``arrived`` and ride the next transaction the worker runs: the next user
invocation's, or, once the queue has run empty, one of their own
(``kelpie.messaging.inbox``, ADR 0020).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kelpie.errors import MailboxFullError, StorageError, TransactionConflictError
from kelpie.messaging import inbox
from kelpie.messaging.inbox import Arrival
from kelpie.runtime.activation import Activation
from kelpie.runtime.idempotency import Idempotency
from kelpie.runtime.retry import ConflictRetry

if TYPE_CHECKING:
    from kelpie.messaging.calls import Special

__all__ = ["Mailbox"]

log = logging.getLogger("kelpie.runtime")


@dataclass(slots=True)
class _Call:
    operation: str
    payload: Any
    idempotency: Idempotency | None
    reply: asyncio.Future[Any]
    special: Special | None = None


@dataclass(slots=True)
class _Stop:
    reply: asyncio.Future[None]


class _Renew:
    """Renew the actor's lease (queued by the runtime's sweep)."""


class Mailbox:
    """The queue and worker task of one actor."""

    # Slots: one per active actor, touched by every invocation (compact, no __dict__).
    __slots__ = (
        "_after",
        "_capacity",
        "_items",
        "_loop",
        "_on_exit",
        "_retry",
        "_wakeup",
        "activation",
        "arrived",
        "idle_since",
        "stopping",
        "task",
    )

    def __init__(
        self,
        activation: Activation,
        *,
        capacity: int,
        after: asyncio.Task[None] | None,
        on_exit: Callable[[Mailbox], None],
        retry: ConflictRetry | None = None,
    ) -> None:
        self.activation = activation
        self._retry = retry
        self._items: deque[_Call | _Stop | _Renew] = deque()
        self._capacity = capacity
        self._wakeup: asyncio.Future[None] | None = None
        """Set while the worker waits for an item."""
        self._after = after
        self._on_exit = on_exit
        self.stopping = False
        self.arrived: list[Arrival] = []
        """Messages waiting for this actor's next transaction."""
        self._loop = asyncio.get_running_loop()
        self.idle_since: float | None = self._loop.time()
        """Loop time since which the mailbox has been empty and idle; None while busy."""
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._run(), name=f"kelpie-actor-{activation.actor_id}"
        )

    def submit(
        self,
        operation: str,
        payload: Any,
        idempotency: Idempotency | None,
        special: Special | None = None,
    ) -> asyncio.Future[Any]:
        if len(self._items) >= self._capacity:
            raise MailboxFullError(
                f"the mailbox of actor {self.activation.actor_id} is full "
                f"({self._capacity} invocations waiting)"
            )
        reply: asyncio.Future[Any] = self._loop.create_future()
        self.idle_since = None
        self._put(_Call(operation, payload, idempotency, reply, special))
        return reply

    def arrive(self, arrival: Arrival) -> None:
        """Add a message to the actor's next transaction (see ``_run`` for which one)."""
        if len(self.arrived) >= self._capacity:
            raise MailboxFullError(
                f"the mailbox of actor {self.activation.actor_id} is full "
                f"({self._capacity} messages waiting)"
            )
        self.arrived.append(arrival)
        self.idle_since = None
        self._wake()  # a worker waiting for items: the queue is empty

    def renew(self) -> None:
        """Queue a lease renewal; skipped when the queue is full of calls (they renew)."""
        if not self.stopping and len(self._items) < self._capacity:
            self._put(_Renew())

    def stop(self) -> asyncio.Future[None]:
        """Deactivate after the invocations already queued; the future ends with it."""
        self.stopping = True
        reply: asyncio.Future[None] = self._loop.create_future()
        self._put(_Stop(reply))  # never refused for a full queue: it waits its turn
        return reply

    def _put(self, item: _Call | _Stop | _Renew) -> None:
        self._items.append(item)
        self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _wait_for_item(self) -> None:
        """Until something is queued or has arrived."""
        while not self._items and not self.arrived:
            self.idle_since = self._loop.time()
            self._wakeup = self._loop.create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None

    async def _run(self) -> None:
        activation = self.activation
        items = self._items
        stop: _Stop | None = None
        try:
            if self._after is not None and not self._after.done():
                # The previous activation of this actor has not finished yet; how
                # it ends (even by an error) does not matter, only that it ended.
                await asyncio.wait((self._after,))
            while True:
                if not items:
                    if self.arrived:  # and no call queued to carry them
                        await self._deliver_arrived()
                    else:
                        await self._wait_for_item()
                    continue
                item = items.popleft()
                if isinstance(item, _Stop):
                    stop = item
                    break
                if isinstance(item, _Renew):
                    try:
                        await activation.renew()
                    except Exception:
                        log.warning(
                            "lease renewal of %s failed", activation.actor_id, exc_info=True
                        )
                    continue
                assert isinstance(item, _Call)
                if item.reply.done():
                    continue
                try:
                    if self.arrived and item.special is None:
                        result = await self._call_with_arrived(item)
                    elif self._retry is None:
                        if not activation.loaded:
                            await activation.load()
                        result = await activation.invoke(
                            item.operation, item.payload, item.idempotency, item.special
                        )
                    else:
                        result = await self._attempts(item, self._retry)
                except BaseException as exc:
                    if not item.reply.done():
                        item.reply.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    if not item.reply.done():
                        item.reply.set_result(result)
        finally:
            self.stopping = True
            self._on_exit(self)
        try:
            await activation.deactivate()
        except Exception as exc:
            if stop is not None and not stop.reply.done():
                stop.reply.set_exception(exc)
            else:
                log.warning("deactivation of %s failed", activation.actor_id, exc_info=True)
        else:
            if stop is not None and not stop.reply.done():
                stop.reply.set_result(None)
        finally:
            self._fail_leftovers()

    async def _deliver_arrived(self) -> None:
        """Messages arrived and nothing is queued: apply them, unless a user call comes first.

        The worker yields once first: a caller whose previous call just
        returned gets to queue its next one, which then carries the messages
        in its own commit (the worker's loop runs it next).
        """
        await asyncio.sleep(0)
        if self._user_call_waiting():
            return
        batch = inbox.take(self.arrived)
        if batch:
            await inbox.deliver_arrived(self.activation, batch)

    def _user_call_waiting(self) -> bool:
        for item in self._items:
            if isinstance(item, _Stop):
                return False
            if isinstance(item, _Call) and item.special is None and not item.reply.done():
                return True
        return False

    async def _call_with_arrived(self, item: _Call) -> Any:
        """Run a user's call with the arrived messages first, in its transaction.

        If anything fails, each message is delivered alone first; then the
        call's own outcome stands when its handler had started (a retryable
        conflict goes on to ``_attempts``), else the call runs again alone,
        as if no message had arrived (a storage error before the handler is
        the call's own outcome, as alone).
        """
        activation = self.activation
        if not activation.loaded:
            await activation.load()  # a failure here is the call's; the messages keep waiting
        batch = inbox.take(self.arrived)
        if not batch:
            return await self._call(item)
        retry = self._retry
        payload = item.payload if retry is None else copy.deepcopy(item.payload)
        try:
            return await inbox.invoke_with(
                activation, batch, item.operation, payload, item.idempotency
            )
        except inbox.CombinedFailed as exc:
            failed = exc
        except BaseException:
            inbox.give_back(batch, activation.actor_id)
            raise
        error = failed.error
        # Asked before the messages reload the activation (may_retry: did it drop it?).
        retryable = (
            retry is not None
            and isinstance(error, TransactionConflictError)
            and activation.may_retry(error)
        )
        await inbox.deliver_alone(activation, batch)
        if retryable:
            assert retry is not None
            await asyncio.sleep(retry.delay(1))
            if item.reply.done():
                raise error
            return await self._attempts(item, retry, attempt=1)
        if failed.handler_started or isinstance(error, StorageError):
            raise error
        return await self._call(item)

    async def _call(self, item: _Call) -> Any:
        activation = self.activation
        if self._retry is not None:
            return await self._attempts(item, self._retry)
        if not activation.loaded:
            await activation.load()
        return await activation.invoke(item.operation, item.payload, item.idempotency, item.special)

    async def _attempts(self, item: _Call, retry: ConflictRetry, attempt: int = 0) -> Any:
        """Run ``item``, again after a conflict that stored nothing (see ``retry.py``).

        Each attempt's handler gets its own copy of the payload, so a retry
        sees it as the caller sent it even if an earlier attempt changed it.
        """
        activation = self.activation
        while True:
            try:
                if not activation.loaded:
                    await activation.load()
                payload = copy.deepcopy(item.payload)
                return await activation.invoke(
                    item.operation, payload, item.idempotency, item.special
                )
            except TransactionConflictError as exc:
                if not activation.may_retry(exc) or attempt >= retry.retries:
                    raise
                attempt += 1
                await asyncio.sleep(retry.delay(attempt))
                if item.reply.done():  # the caller gave up meanwhile: nothing was stored
                    raise

    def _fail_leftovers(self) -> None:
        # Nothing can be queued after stopping is set, but a put may race an idle exit.
        while self._items:
            item = self._items.popleft()
            if isinstance(item, _Renew):
                continue
            if isinstance(item, _Stop):
                if not item.reply.done():
                    item.reply.set_result(None)
            elif not item.reply.done():
                item.reply.set_exception(RuntimeError("actor mailbox closed"))
        inbox.give_back(self.arrived, self.activation.actor_id)
        self.arrived.clear()
