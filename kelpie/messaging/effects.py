"""What a handler asked for besides state and KV: messages to send, reminders to set.

``ctx.send``, ``ctx.set_reminder`` and ``ctx.cancel_reminder`` only append to
an ``Effects`` buffer (created on first use, so an invocation that uses none
of them pays nothing). Arguments are checked and payloads encoded at the
call, so a bad call raises in the handler, where the mistake is. The runtime
stages the buffer into the invocation's transaction after the handler
returned (``kelpie.messaging.service``); a handler that raises stages nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kelpie.actor.codec import encode_json
from kelpie.identity import ActorId
from kelpie.messaging.records import MAX_REMINDER_NAME_BYTES, NOT_SCALAR, Message

__all__ = ["Effects", "ReminderSet"]


_SCALARS = frozenset({int, float, str, bool, type(None)})


@dataclass(frozen=True, slots=True)
class ReminderSet:
    name: str
    after: float
    operation: str
    payload_json: bytes
    every: float | None


def _seconds(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return seconds


def check_reminder_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a reminder name must be a str, got {type(name).__name__}")
    if not 0 < len(name.encode("utf-8")) <= MAX_REMINDER_NAME_BYTES:
        raise ValueError(
            f"a reminder name must be 1-{MAX_REMINDER_NAME_BYTES} UTF-8 bytes, got {name!r:.80}"
        )
    return name


class Effects:
    """The buffered sends and reminder changes of one invocation, in call order."""

    __slots__ = ("reminders", "sends")

    def __init__(self) -> None:
        self.sends: list[Message] = []
        """Not numbered yet: the commit that stores them numbers them (``seq``, ``key``)."""
        self.reminders: dict[str, ReminderSet | None] = {}
        """Name -> the reminder to set, or ``None`` to cancel it (the last call wins)."""

    def send(self, sender: ActorId, target: object, operation: object, payload: Any) -> None:
        if not isinstance(target, ActorId):
            raise TypeError(f"target must be an ActorId, got {type(target).__name__}")
        if not isinstance(operation, str) or not operation:
            raise TypeError(f"operation must be a non-empty str, got {operation!r}")
        payload_json = encode_json(payload, "message payload")
        # An immutable scalar payload is kept as is too: no decode to deliver it.
        scalar = payload if type(payload) in _SCALARS else NOT_SCALAR
        self.sends.append(
            Message(
                sender,
                target,
                0,  # numbered, keyed and tagged by the commit that stores it
                operation,
                payload_json=payload_json,
                key=b"",
                scalar=scalar,
                sender_tag=b"",
            )
        )

    def set_reminder(
        self, name: object, after: object, operation: object, payload: Any, every: object
    ) -> None:
        key = check_reminder_name(name)
        delay = _seconds("after", after, allow_zero=True)
        period = None if every is None else _seconds("every", every, allow_zero=False)
        if not isinstance(operation, str) or not operation:
            raise TypeError(f"operation must be a non-empty str, got {operation!r}")
        payload_json = encode_json(payload, "reminder payload")
        self.reminders[key] = ReminderSet(key, delay, operation, payload_json, period)

    def cancel_reminder(self, name: object) -> None:
        self.reminders[check_reminder_name(name)] = None
