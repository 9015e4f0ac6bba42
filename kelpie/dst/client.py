"""The client side of a simulation: which keys may still be retried, which process to ask.

Idempotency records live in a window of each actor's most recent keyed
commits (``Runtime(idempotency_window=N)``). A retry with a key that has left
the window would apply the operation a second time, so a client must stop
retrying once that may have happened. ``KeyWindow`` bounds it from what the
client side knows: the keyed commits on an actor that could have landed after
a key's first attempt started are at most the keyed attempts started since
(the key's own excluded: it lands at most once) plus the keyed attempts that
were still open -- not known to be finished -- when it started. An attempt
abandoned on a paused process stays open until that process dies.
"""

from __future__ import annotations

from kelpie.identity import ActorId

__all__ = ["KeyWindow"]


class KeyWindow:
    """Counts keyed attempts per actor to tell whether a key may still be retried."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._started: dict[ActorId, int] = {}
        self._open: dict[ActorId, int] = {}
        self._first: dict[tuple[ActorId, str], list[int]] = {}
        """(actor, key) -> [attempts started before its first, open then, its own attempts]."""

    def start(self, actor: ActorId, key: str) -> None:
        """An attempt with ``key`` on ``actor`` begins (it is open until ``finish``)."""
        started = self._started.get(actor, 0)
        first = self._first.get((actor, key))
        if first is None:
            first = self._first[(actor, key)] = [started, self._open.get(actor, 0), 0]
        first[2] += 1
        self._started[actor] = started + 1
        self._open[actor] = self._open.get(actor, 0) + 1

    def finish(self, actor: ActorId) -> None:
        """A keyed attempt on ``actor`` is known to be over: it can no longer land."""
        self._open[actor] -= 1

    def bound(self, actor: ActorId, key: str) -> int:
        """How many keyed commits may have landed on ``actor`` after ``key``'s first attempt."""
        base, open_then, own = self._first[(actor, key)]
        return self._started[actor] - base - own + open_then

    def actors(self) -> list[ActorId]:
        """Every actor that saw a keyed attempt."""
        return list(self._started)

    def may_retry(self, actor: ActorId, key: str) -> bool:
        """Whether ``key`` is certainly still in the window (if it landed at all)."""
        return self.bound(actor, key) < self.window
