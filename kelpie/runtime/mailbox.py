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
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kelpie.errors import MailboxFullError, TransactionConflictError
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
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _wait_for_item(self) -> None:
        while not self._items:
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
                    await self._wait_for_item()
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
                if item.reply.done():
                    continue
                try:
                    if self._retry is None:
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

    async def _attempts(self, item: _Call, retry: ConflictRetry) -> Any:
        """Run ``item``, again after a conflict that stored nothing (see ``retry.py``).

        Each attempt's handler gets its own copy of the payload, so a retry
        sees it as the caller sent it even if an earlier attempt changed it.
        """
        activation = self.activation
        attempt = 0
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
