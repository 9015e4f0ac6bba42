"""The bench's table and summary lines.

Rows stream as they are measured (fixed column widths), then the summary:
scaling from the lowest to the highest concurrency, the group-commit speed-up
(with ``--compare-off``) and the cost of more keys per invocation (with
several ``--keys``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kelpie.bench.timing import Sample

__all__ = ["Row", "format_header", "format_row", "summary_lines"]

NA = "n/a"
NONE = "-"
REDIS_KEYS_TARGET = 3.0  # issue 6: on Redis, 100 keys cost at most 3x the time of 1 key
# issue 18, on PostgreSQL and SQLite: (actors, least ratio kelpie / raw at that concurrency)
SQL_TARGETS = ((64, 3.0), (1, 0.8))
_SQL_BACKENDS = ("postgres", "sqlite")


@dataclass
class Row:
    """One measurement: a backend at one concurrency and one number of keys."""

    backend: str
    keys: int
    concurrency: int
    kelpie: Sample
    raw: Sample | None = None
    off: Sample | None = None  # the same storage opened with group_commit=False
    mean_batch: float | None = None  # commits per group-commit batch, if reported

    @property
    def ratio(self) -> float | None:
        """kelpie invocations/s over raw invocations/s."""
        if self.raw is None or not self.raw.rate:
            return None
        return self.kelpie.rate / self.raw.rate


# (title, width); the first column is left-aligned, the others right-aligned
_COLUMNS = [
    ("backend", 11),
    ("keys", 5),
    ("actors", 6),
    ("inv/s", 9),
    ("p50 ms", 8),
    ("p99 ms", 8),
    ("raw/s", 9),
    ("raw p99 ms", 10),
    ("ratio", 6),
    ("batch", 6),
]
_OFF_COLUMNS = [("off inv/s", 9), ("off p99 ms", 10)]


def _columns(compare_off: bool) -> list[tuple[str, int]]:
    return _COLUMNS + (_OFF_COLUMNS if compare_off else [])


def _line(cells: Sequence[str], compare_off: bool) -> str:
    widths = [width for _, width in _columns(compare_off)]
    out = [cells[0].ljust(widths[0])]
    out += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
    return "  ".join(out).rstrip()


def format_header(compare_off: bool = False) -> str:
    return _line([title for title, _ in _columns(compare_off)], compare_off)


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    if 0 < value < 0.001:
        return f"{value:.1e}"  # a raw in-memory operation: under a microsecond, not zero
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def format_row(row: Row, compare_off: bool = False) -> str:
    k, raw = row.kelpie, row.raw
    cells = [
        row.backend,
        str(row.keys),
        str(row.concurrency),
        _rate(k.rate),
        _ms(k.p50_ms),
        _ms(k.p99_ms),
        _rate(raw.rate) if raw is not None else NA,
        _ms(raw.p99_ms) if raw is not None else NA,
        f"{row.ratio:.2f}" if row.ratio is not None else NA,
        f"{row.mean_batch:.1f}" if row.mean_batch is not None else NONE,
    ]
    if compare_off:
        off = row.off
        cells += [_rate(off.rate), _ms(off.p99_ms)] if off is not None else [NA, NA]
    return _line(cells, compare_off)


def _times(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else NA


def _keys(n: int) -> str:
    return f"{n} key" if n == 1 else f"{n} keys"


def _actors(n: int) -> str:
    return f"{n} actor" if n == 1 else f"{n} actors"


def summary_lines(rows: Sequence[Row]) -> list[str]:
    """Scaling, group-commit and keys lines for every backend in ``rows``."""
    lines: list[str] = []
    backends = list(dict.fromkeys(row.backend for row in rows))
    all_keys = sorted({row.keys for row in rows})
    for backend in backends:
        mine = [row for row in rows if row.backend == backend]
        at = {(row.keys, row.concurrency): row for row in mine}
        concurrencies = sorted({row.concurrency for row in mine})
        lo, hi = concurrencies[0], concurrencies[-1]
        for keys in all_keys:
            per_keys = f" ({_keys(keys)})" if len(all_keys) > 1 else ""
            if hi > lo and (keys, lo) in at and (keys, hi) in at:
                speed = _times(at[keys, hi].kelpie.rate, at[keys, lo].kelpie.rate)
                lines.append(f"{backend}: {_actors(hi)} / {_actors(lo)}: {speed}{per_keys}")
            with_off = [at[keys, n] for n in concurrencies if (keys, n) in at]
            with_off = [row for row in with_off if row.off is not None]
            if with_off:
                ups = ", ".join(
                    f"{_times(row.kelpie.rate, row.off.rate)} at {row.concurrency}"
                    for row in with_off
                    if row.off is not None
                )
                lines.append(f"{backend}: group commit on / off, inv/s: {ups}{per_keys}")
                first = with_off[0]
                if first.off is not None and first.off.p99_ms:
                    change = (first.kelpie.p99_ms / first.off.p99_ms - 1.0) * 100.0
                    lines.append(
                        f"{backend}: p99 with group commit vs without at "
                        f"{_actors(first.concurrency)}: {change:+.0f}%{per_keys}"
                    )
        if len(all_keys) > 1:
            few, many = all_keys[0], all_keys[-1]
            parts = []
            for n in concurrencies:
                if (few, n) not in at or (many, n) not in at:
                    continue
                a, b = at[few, n], at[many, n]
                part = f"{_times(a.kelpie.rate, b.kelpie.rate)} at {n}"
                if a.raw is not None and b.raw is not None:
                    part += f" (raw {_times(a.raw.rate, b.raw.rate)})"
                parts.append(part)
            target = ""
            if "redis" in backend and (few, 1) in at and (many, 1) in at:
                # The cost of one invocation: measured one at a time (concurrency 1).
                ratio = at[few, 1].kelpie.rate / max(at[many, 1].kelpie.rate, 1e-9)
                verdict = "met" if ratio <= REDIS_KEYS_TARGET else "missed"
                target = (
                    f"; issue target on Redis, one invocation at a time: "
                    f"<= {REDIS_KEYS_TARGET:g}x at 1: {verdict}"
                )
            lines.append(
                f"{backend}: time per invocation, {_keys(many)} / {_keys(few)}: "
                f"{', '.join(parts)}{target}"
            )
        if backend.startswith(_SQL_BACKENDS):
            lines += _sql_targets(backend, at, all_keys[0])
    return lines


def _sql_targets(backend: str, at: dict[tuple[int, int], Row], keys: int) -> list[str]:
    """Issue 18's targets, kelpie / raw at 64 and at 1 actor(s), where both were measured."""
    parts = []
    for actors, least in SQL_TARGETS:
        row = at.get((keys, actors))
        ratio = None if row is None else row.ratio
        if ratio is None:
            continue
        verdict = "met" if ratio >= least else "missed"
        parts.append(f"{_actors(actors)} {ratio:.2f}x (>= {least:g}x: {verdict})")
    if not parts:
        return []
    return [f"{backend}: issue 18 targets, kelpie / raw: " + "; ".join(parts)]
