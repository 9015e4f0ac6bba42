"""The trace digest: a running SHA-256 over every event a simulation records.

Two runs of one seed must record the same events in the same order, so they
give the same digest; any divergence (a different schedule, fault decision or
result) changes it. Events are hashed as their ``repr`` (of plain data: str, int, float, bytes,
lists and insertion-ordered dicts, never sets); the last few are
kept in memory to show where a run went.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any

__all__ = ["Trace"]


class Trace:
    """Records events into a SHA-256 digest; keeps the last ``keep`` events."""

    def __init__(self, *, keep: int = 200) -> None:
        self._hash = hashlib.sha256()
        self.count = 0
        self.recent: collections.deque[str] = collections.deque(maxlen=keep)

    def record(self, kind: str, *fields: Any) -> None:
        """Add one event: a kind and plain-data fields (no sets: their order varies)."""
        # repr of str/int/float/bytes/list/dict (insertion-ordered) is deterministic
        # and much cheaper than JSON; anything else is a programming error here.
        line = repr((kind, *fields))
        self._hash.update((line + "\n").encode())
        self.count += 1
        self.recent.append(line)

    @property
    def digest(self) -> str:
        """The hex digest of every event recorded so far."""
        return self._hash.hexdigest()
