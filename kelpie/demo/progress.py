"""A small progress display: a bar on a terminal, a few plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]

_WIDTH = 30
_REDRAW = 0.1  # seconds between redraws of the bar


class Progress:
    """Shows ``done/total``; redraws a bar in place when ``stream`` is a TTY,
    else writes one plain line at each quarter."""

    def __init__(self, total: int, *, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._started = time.perf_counter()
        self._drawn = 0.0
        self._quarter = 0

    def update(self, done: int, note: str = "") -> None:
        now = time.perf_counter()
        if self.tty:
            if now - self._drawn >= _REDRAW or done >= self.total:
                self._drawn = now
                self._draw(done, note, now)
            return
        quarter = 4 * done // self.total if self.total else 4
        if quarter > self._quarter:
            self._quarter = quarter
            self.stream.write(f"  {self._line(done, note, now)}\n")
            self.stream.flush()

    def _line(self, done: int, note: str, now: float) -> str:
        line = f"{done:,}/{self.total:,} ops  {now - self._started:.1f} s"
        return f"{line}  {note}" if note else line

    def _draw(self, done: int, note: str, now: float) -> None:
        filled = _WIDTH * done // self.total if self.total else _WIDTH
        bar = "#" * filled + "." * (_WIDTH - filled)
        self.stream.write(f"\r  [{bar}] {self._line(done, note, now)}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (a terminal), so later output starts on a fresh one."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
