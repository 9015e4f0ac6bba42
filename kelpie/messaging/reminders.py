"""Reminders: records in the actor, a due-time index beside, fired as fenced invocations.

``stage`` runs inside the actor's transaction after its handler returned: a
set reminder's record (``m`` + name: due time, period, operation, payload)
is written, a cancelled one deleted. Before that commit, the new due time is
put in the actor's index shard (a separate write-only commit): an index
entry may therefore exist for a record that never committed, never the
other way round (ADR 0018). The record is the truth; the index only says
where to look.

Firing (``fire``) is an invocation of the actor through its mailbox: it
reads the record; if it still names this due time it runs the handler and,
in the same commit, advances a repeating record past now (its next index
entry is written first) or deletes a one-shot one. A record that is gone or
names another due time makes the entry stale: the fire commits an empty
change (which fences out any commit still in flight that read the actor
before) and the entry is deleted. So a due time fires at most once (the
version check) and, while a runtime runs, at least once.

Due times are reminder time (``Services.clock``, ``kelpie.messaging.clock``):
seconds since the epoch, kept by the event loop, so every runtime on the
store reads a record's due time alike.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kelpie.actor.actor import Actor
from kelpie.actor.codec import decode_json, encode_json
from kelpie.actor.context import ActorContext
from kelpie.errors import CorruptStateError
from kelpie.identity import ActorId
from kelpie.messaging import calls, records
from kelpie.messaging.effects import ReminderSet
from kelpie.storage.protocol import Transaction

if TYPE_CHECKING:
    from kelpie.messaging.service import Services

__all__ = ["Reminder", "StagedReminders", "due_us", "fire"]


def due_us(due: float) -> int:
    """A due time as the index orders it: whole microseconds, never negative."""
    return max(0, int(due * 1_000_000))


@dataclass(frozen=True, slots=True)
class Reminder:
    name: str
    due: float
    every: float | None
    operation: str
    payload: Any
    attempts: int = 0
    """Failed fires of this due time so far (kept in the record: survives restarts)."""

    def pack(self) -> bytes:
        data = {"due": self.due, "every": self.every, "o": self.operation, "p": self.payload}
        if self.attempts:
            data["a"] = self.attempts
        return encode_json(data, "reminder")

    @classmethod
    def unpack(cls, name: str, raw: bytes, actor: ActorId) -> Reminder:
        try:
            data = decode_json(raw)
            attempts = data.get("a", 0)
            if type(attempts) is not int:
                raise TypeError(f"attempts {attempts!r} is not an int")
            return cls(name, float(data["due"]), data["every"], str(data["o"]), data["p"], attempts)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptStateError(f"reminder {name!r} of {actor} is unreadable: {exc}") from exc

    def after(self, now: float) -> float:
        """The next due time of a repeating reminder: past this one and past ``now``."""
        assert self.every is not None
        due = self.due + self.every
        if due <= now:  # missed periods (no runtime ran) are skipped, not fired in a burst
            due += ((now - due) // self.every + 1) * self.every
        return due


class StagedReminders:
    __slots__ = ("dues",)

    def __init__(self, dues: list[float]) -> None:
        self.dues = dues


async def stage(
    services: Services,
    actor: ActorId,
    changes: dict[str, ReminderSet | None],
    txn: Transaction,
) -> StagedReminders:
    now = services.clock()
    dues = []
    for name in sorted(changes):
        change = changes[name]
        key = records.reminder_key(name)
        if change is None:
            await txn.delete(key)
            continue
        reminder = Reminder(
            name,
            now + change.after,
            change.every,
            change.operation,
            decode_json(change.payload_json),
        )
        await services.index_due(actor, name, due_us(reminder.due))
        await txn.set(key, reminder.pack())
        dues.append(reminder.due)
    return StagedReminders(dues)


def fire(
    services: Services,
    actor_id: ActorId,
    name: str,
    due: int,
    outcome: calls.Outcome,
    *,
    skip_error: str | None = None,
    failed: str | None = None,
    max_attempts: int = 5,
) -> calls.Special:
    """Fire reminder ``name`` for index due time ``due`` (or, with ``skip_error``, give it up).

    With ``failed`` (the error of a fire that raised): count the failure in
    the record (``outcome.attempts``) and, at ``max_attempts``, give the due
    time up as ``skip_error`` does (``outcome.dead``). ``outcome.attempts`` stays
    0 when the entry turned out stale.
    """

    async def body(actor: Actor[Any], ctx: ActorContext[Any]) -> None:
        txn = calls.txn_of(ctx)
        key = records.reminder_key(name)
        raw = await txn.get(key)
        reminder = None if raw is None else Reminder.unpack(name, raw, actor_id)
        if reminder is None or due_us(reminder.due) != due:
            ctx.wrote = True  # stale entry: commit, so a commit that read before is fenced out
            return None
        give_up = skip_error
        if failed is not None:
            outcome.attempts = reminder.attempts + 1
            if outcome.attempts < max_attempts:
                await txn.set(key, dataclasses.replace(reminder, attempts=outcome.attempts).pack())
                ctx.wrote = True
                return None
            give_up = failed
            outcome.dead = True
        if give_up is None:
            handler = calls.handler_of(actor, reminder.operation)
            outcome.result = await handler(ctx, copy.deepcopy(reminder.payload))
        else:
            await txn.set(
                records.dead_letter_key(records.tag(actor_id, name), due),
                encode_json(
                    {
                        "reminder": name,
                        "due": reminder.due,
                        "operation": reminder.operation,
                        "payload": reminder.payload,
                        "error": give_up[:2000],
                    },
                    "dead letter",
                ),
            )
        if reminder.every is not None:
            now = services.clock()
            following = Reminder(
                name, reminder.after(now), reminder.every, reminder.operation, reminder.payload
            )
            await services.index_due(actor_id, name, due_us(following.due))
            await txn.set(key, following.pack())
            services.wake_at(following.due)
        else:
            await txn.delete(key)
        ctx.wrote = True
        outcome.applied = True
        return None

    return body
