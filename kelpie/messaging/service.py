"""``Services``: one runtime's messaging and reminders, and the hooks the runtime calls.

The activation calls ``forget`` when it (re)loads an actor, ``stage`` in a
commit whose handler used ``ctx.send``/``set_reminder``/``cancel_reminder``,
and ``committed`` after that commit landed. The runtime calls ``start``
(the background task) and ``close``. An invocation that uses none of these
pays nothing but the check that its context has no effects.

The background task ticks on loop time (due times are reminder time,
``kelpie.messaging.clock``): each tick lists the index shards
(``kelpie.index/00``..``15``), delivers the outboxes it finds (and drops
index entries of outboxes seen empty), and fires the reminders that are due.
It ticks every ``poll`` seconds while anything uses messaging or the index
holds entries, else every ``idle_poll`` seconds; a reminder staged here
wakes it at its due time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kelpie.actor.codec import StateRecord
from kelpie.actor.keys import STATE_KEY
from kelpie.errors import (
    ActorActiveElsewhereError,
    InvocationTimeoutError,
    MailboxFullError,
    RuntimeClosedError,
    StorageError,
    UnknownActorTypeError,
    UnsupportedOperationError,
)
from kelpie.identity import ActorId
from kelpie.messaging import calls, records, reminders
from kelpie.messaging.attempts import MAX_ATTEMPTS, backoff
from kelpie.messaging.clock import ReminderClock
from kelpie.messaging.delivery import Messenger, StagedSends, _clean_context
from kelpie.messaging.effects import Effects
from kelpie.storage.protocol import Storage, Transaction

if TYPE_CHECKING:
    from kelpie.runtime.runtime import Runtime

__all__ = ["Services", "Staged"]

log = logging.getLogger("kelpie.messaging")


class Staged:
    """What one commit staged; ``Services.committed`` acts on it once the commit landed."""

    __slots__ = ("reminders", "sends")

    def __init__(
        self, sends: StagedSends | None, staged_reminders: reminders.StagedReminders | None
    ) -> None:
        self.sends = sends
        self.reminders = staged_reminders


class Services:
    """Messaging and reminders of one ``Runtime``."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        clock: ReminderClock,
        poll: float = 1.0,
        idle_poll: float = 5.0,
    ) -> None:
        self.runtime = runtime
        self.clock = clock
        """Reminder time: what due times are stored in (``kelpie.messaging.clock``)."""
        self.storage: Storage = runtime.storage
        self.messenger = Messenger(self)
        self.poll = poll
        self.idle_poll = idle_poll
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._soonest: float | None = None
        self._firing: dict[tuple[ActorId, bytes], asyncio.Task[None]] = {}
        self._fire_attempts: dict[tuple[ActorId, bytes], int] = {}
        self.closed = False
        # Built inside the runtime's constructor: the sweep belongs to whoever built the
        # runtime (a simulated process), not to whichever task first registers or invokes.
        self._context = _clean_context()

    # -- hooks of the activation ----------------------------------------------------

    def forget(self, actor_id: ActorId) -> None:
        self.messenger.forget(actor_id)

    async def stage(
        self, effects: Effects, txn: Transaction, actor_id: ActorId, version: int
    ) -> Staged:
        """Write ``effects`` into ``txn`` (the commit of version ``version``)."""
        sends = (
            await self.messenger.stage(actor_id, effects.sends, txn, version)
            if effects.sends
            else None
        )
        staged_reminders = (
            await reminders.stage(self, actor_id, effects.reminders, txn)
            if effects.reminders
            else None
        )
        return Staged(sends, staged_reminders)

    def committed(self, staged: Staged) -> None:
        if staged.sends is not None:
            self.messenger.committed(staged.sends)
        if staged.reminders is not None:
            for due in staged.reminders.dues:
                self.wake_at(due)
        self.start()

    # -- for the messenger and the reminders ------------------------------------------

    async def submit(self, actor_id: ActorId, special: calls.Special) -> Any:
        return await self.runtime._submit(actor_id, special)

    async def _index_write(self, shard: ActorId, key: bytes, value: bytes | None) -> None:
        async with self.storage.transaction(shard) as txn:
            if value is None:
                await txn.delete(key)
            else:
                await txn.set(key, value)

    async def index_put(self, sender: ActorId, kind: bytes, token: int) -> None:
        """Index entry: ``sender`` may have an outbox (``token``: the commit it is for)."""
        key = kind + records.tag(sender) + records.seq_bytes(token)
        value = records.encode_actor(sender)
        await self._index_write(records.index_actor(sender), key, value)

    async def index_due(self, actor_id: ActorId, name: str, due: int) -> None:
        """Index entry: reminder ``name`` of ``actor_id`` may be due at ``due`` (µs)."""
        key = records.INDEX_DUE + records.seq_bytes(due) + records.tag(actor_id, name)
        value = records.encode_actor(actor_id, name)
        await self._index_write(records.index_actor(actor_id), key, value)

    async def read_consistently(
        self, actor_id: ActorId, check: Callable[[Transaction], Awaitable[bool]]
    ) -> int | None:
        """The actor's commit seq if ``check`` holds at it (one validated read-only txn)."""
        async with self.storage.transaction(actor_id) as txn:
            raw = await txn.get(STATE_KEY)
            ok = await check(txn)
        if not ok:
            return None
        return 0 if raw is None else StateRecord.decode(raw, f"actor {actor_id}").seq

    def wake_at(self, due: float) -> None:
        if self._soonest is None or due < self._soonest:
            self._soonest = due
            self._wakeup.set()

    # -- the background task --------------------------------------------------------------

    def start(self) -> None:
        if self._task is None and not self.closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="kelpie-messaging", context=self._context
            )

    async def _run(self) -> None:
        while not self.closed:
            busy = False
            try:
                busy = await self._tick()
            except Exception:
                log.info("a messaging sweep failed; the next one retries", exc_info=True)
                busy = True
            if self.closed:
                # close() cancelled this task, but a storage client may have taken the
                # cancel for its own (fakeredis did): do not wait out a poll.
                return
            delay = self.poll if busy or self.messenger.used else self.idle_poll
            soonest = self._soonest
            if soonest is not None:
                # Never 0: a due time rounded to microseconds must not spin the loop.
                delay = min(delay, max(0.001, soonest - self.clock()))
            self._wakeup.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
            # cancel of close() when the wake-up lands in the same turn, and the
            # sweep would run on forever (close() then never returns).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    async def _tick(self) -> bool:
        """One sweep of every index shard; True if the index holds anything."""
        now_us = reminders.due_us(self.clock())
        self._soonest = None
        busy = False
        for shard in await self._shards():
            try:
                keys = await self.storage.list_keys(shard)
            except StorageError:
                log.info("listing %s failed; the next sweep retries", shard, exc_info=True)
                busy = True
                continue
            if keys:
                busy = True
            outboxes: dict[bytes, list[bytes]] = {}
            for key in keys:
                if key[:1] == records.INDEX_OUTBOX and len(key) == 25:
                    outboxes.setdefault(key[1:17], []).append(key)
                elif key[:1] == records.INDEX_DUE and len(key) == 25:
                    due = int.from_bytes(key[1:9], "big")
                    if due <= now_us:
                        await self._start_fire(shard, key, due)
                    else:
                        self.wake_at((due + 1) / 1_000_000)
            for entries in outboxes.values():
                await self._sweep_outbox(shard, entries)
        return busy

    async def _shards(self) -> list[ActorId]:
        """The index shards that hold entries: one ``list_actors`` call where supported."""
        try:
            return await self.storage.list_actors(
                records.INDEX_NAMESPACE, limit=records.INDEX_SHARDS + 1
            )
        except UnsupportedOperationError:
            return records.index_shards()

    async def _entry_actor(self, shard: ActorId, key: bytes) -> tuple[ActorId, str] | None:
        raw = await self.storage.get(shard, key)
        if raw is None:
            return None
        return records.decode_actor(raw, f"index entry {key!r} of {shard}")

    async def _sweep_outbox(self, shard: ActorId, entries: list[bytes]) -> None:
        try:
            found = await self._entry_actor(shard, entries[0])
            if found is None:
                return
            sender = found[0]
            if self.messenger.pumping(sender):
                return
            messages = await self.messenger.read_outbox(sender)
            if messages:
                self.messenger.enqueue(sender, messages)
                return
            seq = await self.messenger.empty_at(sender)
            if seq is None:
                return
            async with self.storage.transaction(shard) as txn:
                for key in entries:
                    if int.from_bytes(key[17:], "big") <= seq:
                        await txn.delete(key)
        except Exception:
            log.info("sweeping an outbox index entry failed", exc_info=True)

    async def _start_fire(self, shard: ActorId, key: bytes, due: int) -> None:
        found = await self._entry_actor(shard, key)
        if found is None:
            return
        actor_id, name = found
        marker = (actor_id, key)
        if marker in self._firing or self.closed:
            return
        task = asyncio.get_running_loop().create_task(
            self._fire(shard, key, actor_id, name, due), context=_clean_context()
        )
        self._firing[marker] = task
        task.add_done_callback(lambda done: self._firing.pop(marker, None))

    async def _fire(
        self, shard: ActorId, key: bytes, actor_id: ActorId, name: str, due: int
    ) -> None:
        marker = (actor_id, key)
        outcome = calls.Outcome()
        try:
            await self.submit(actor_id, reminders.fire(self, actor_id, name, due, outcome))
        except (ActorActiveElsewhereError, RuntimeClosedError, UnknownActorTypeError):
            return  # the owner fires it (or a runtime that hosts this actor type)
        except (StorageError, InvocationTimeoutError, MailboxFullError):
            return  # the next sweep tries again
        except Exception as exc:
            if not await self._fire_failed(actor_id, name, due, marker, exc):
                return
        self._fire_attempts.pop(marker, None)
        try:
            await self._index_write(shard, key, None)
        except Exception:
            log.info("deleting a fired index entry failed", exc_info=True)

    async def _fire_failed(
        self, actor_id: ActorId, name: str, due: int, marker: tuple[ActorId, bytes], exc: Exception
    ) -> bool:
        """A fire raised: count it in the reminder's record; True once the due time is over.

        At ``MAX_ATTEMPTS`` failures the due time is given up (a dead-letter
        record, a warning). The count lives in the record, so restarts do not
        reset it; if the record cannot be written, this runtime's own count
        bounds it instead.
        """
        error = f"{type(exc).__name__}: {exc}"
        attempts = self._fire_attempts[marker] = self._fire_attempts.get(marker, 0) + 1
        counted = calls.Outcome()
        try:
            await self.submit(
                actor_id,
                reminders.fire(
                    self, actor_id, name, due, counted, failed=error, max_attempts=MAX_ATTEMPTS
                ),
            )
        except Exception:
            log.info("counting a failed fire of %r of %s failed", name, actor_id, exc_info=True)
        else:
            if counted.attempts == 0:
                return True  # the entry was stale: nothing left to fire
            attempts = max(attempts, counted.attempts)
            if counted.dead:
                _log_given_up(name, actor_id, attempts, error)
                return True
        if attempts < MAX_ATTEMPTS:
            self.wake_at(self.clock() + backoff(attempts))
            return False
        _log_given_up(name, actor_id, attempts, error)
        try:
            await self.submit(
                actor_id,
                reminders.fire(self, actor_id, name, due, calls.Outcome(), skip_error=error),
            )
        except Exception:
            log.info("giving up reminder %r of %s failed", name, actor_id, exc_info=True)
            return False
        return True

    async def close(self) -> None:
        """Stop the sweeps; deliver what is pending (without retrying failures).

        Idempotent; a close that was itself cancelled raises ``CancelledError``
        and a later close finishes the job.
        """
        self.closed = True
        task = self._task
        if task is not None and not task.done():
            if not task.cancelling():  # a second cancel would cut its cleanup short
                task.cancel()
            # Not ``await task``: its CancelledError would be indistinguishable
            # from a cancel of close() itself, which must reach the caller.
            await asyncio.wait({task})
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.warning("the messaging sweep ended with an error", exc_info=task.exception())
        await self.messenger.close()
        firing = list(self._firing.values())
        if firing:
            await asyncio.gather(*firing, return_exceptions=True)


def _log_given_up(name: str, actor_id: ActorId, attempts: int, error: str) -> None:
    log.warning(
        "reminder %r of %s failed %d times (%s); its due time is given up",
        name, actor_id, attempts, error,
    )  # fmt: skip
