"""``kelpie bench`` progress on stderr: a bar on a terminal, a line per figure otherwise.

A run measures ``targets x keys x concurrencies`` figures, each taking about
``seconds`` per side (kelpie, the raw baseline, group commit off), so the
total is known in advance: the display says how many figures are done and
roughly how long is left. On a terminal the bar is redrawn in place every
quarter second (``tick``) and cleared before a table row is printed on stdout,
so the two never mix on one line. This is benchmark code: it reads the clock.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["BenchProgress"]

_WIDTH = 30


class BenchProgress:
    """Progress over ``total`` figures of about ``figure_seconds`` each."""

    def __init__(self, total: int, figure_seconds: float, *, stream: TextIO | None = None) -> None:
        self.total = total
        self.figure_seconds = figure_seconds
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self._what = ""
        self._figure_started = time.perf_counter()
        self._drawn = False

    def _in_figure(self, now: float) -> float:
        """Seconds into the figure being measured (0 between figures), at most one figure."""
        if not self._what:
            return 0.0
        return min(now - self._figure_started, self.figure_seconds)

    def _left(self, now: float) -> float:
        in_figure = self._in_figure(now)
        remaining = (self.total - self.done) * self.figure_seconds - in_figure
        return max(0.0, remaining)

    def _text(self, now: float) -> str:
        text = f"{self.done:,}/{self.total:,} figures"
        if self._what:
            text += f", measuring {self._what}"
        if self.done < self.total:
            text += f", about {_duration(self._left(now))} left"
        return text

    def begin(self, backend: str, keys: int, concurrency: int) -> None:
        """A figure starts: ``backend``, ``keys`` keys (0: not shown), ``concurrency`` actors."""
        keys_part = f"{_plural(keys, 'key')}, " if keys else ""
        self._what = f"{backend}, {keys_part}{_plural(concurrency, 'actor')}"
        self._figure_started = time.perf_counter()
        if self.tty:
            self.tick()
        elif self.done == 0:
            self._line(self._text(time.perf_counter()))

    def end(self) -> None:
        """The figure that began last is measured."""
        self.done += 1
        what, self._what = self._what, ""
        if self.tty:
            self.tick()
            return
        text = f"{self.done:,}/{self.total:,} figures ({what} done)"
        if self.done < self.total:
            text += f", about {_duration(self._left(time.perf_counter()))} left"
        self._line(text)

    def tick(self) -> None:
        """Redraw the bar (a terminal only)."""
        if not self.tty:
            return
        now = time.perf_counter()
        fraction = 1.0
        if self.total and self.figure_seconds > 0:
            fraction = (self.done + self._in_figure(now) / self.figure_seconds) / self.total
            fraction = min(1.0, fraction)
        filled = int(_WIDTH * fraction)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {self._text(now)}\x1b[K")
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the bar (a terminal), so that a line printed now starts clean."""
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def _line(self, text: str) -> None:
        self.stream.write(f"kelpie bench: {text}\n")
        self.stream.flush()


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s"
