"""One backend's measurements: kelpie beside its raw baseline, per concurrency and keys.

``bench_storage`` opens the storage a URL names, runs every (keys,
concurrency) figure with kelpie and the raw baseline (and, with
``compare_off``, kelpie on the same URL with ``group_commit=False``) in
alternating slices, and finally deletes every key it wrote: its actors live in
their own namespace (``bench-<random token>``), so it is safe on a store that
holds other data.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kelpie.actor import ActorId
from kelpie.bench.processes import ProcessSide
from kelpie.bench.raw import RawBaseline, open_raw
from kelpie.bench.report import Row
from kelpie.bench.timing import Side, alternate, warm_up
from kelpie.bench.workload import KelpieSide
from kelpie.errors import ConfigError
from kelpie.storage import Storage, open_storage
from kelpie.storage.url import StorageURL

__all__ = ["BenchOptions", "Target", "bench_storage", "check_url", "new_namespace"]


@dataclass(frozen=True)
class BenchOptions:
    """What to measure: every concurrency for every number of keys."""

    concurrencies: tuple[int, ...] = (1, 8, 64)
    seconds: float = 3.0  # per figure and side, split into ``slices``
    keys: tuple[int, ...] = (1,)
    compare_off: bool = False
    slices: int = 3
    processes: int = 1
    """Runtime processes kelpie's side runs in (``--processes``; shared stores only)."""
    workload: str = "invocations"
    """``invocations`` (kelpie beside the raw client) or ``transfers`` (issue 16)."""


@dataclass(frozen=True)
class Target:
    """A backend to measure: its label in the table and its storage URL."""

    label: str
    url: str

    @property
    def shown(self) -> str:
        """The URL without its password."""
        return StorageURL.parse(self.url).render()


def new_namespace() -> str:
    """A fresh actor namespace, ``bench-<random token>``, so runs never meet."""
    return f"bench-{secrets.token_hex(4)}"


async def check_url(url: str, namespace: str) -> None:
    """Open ``url`` and read one (absent) key: a bad URL raises ``ConfigError`` and an
    unreachable server ``StorageUnavailableError`` before anything is measured or written."""
    storage = open_storage(url)
    try:
        await storage.get(ActorId(namespace, "probe"), b"probe")
    finally:
        await storage.close()


def _mean_batch(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[0] <= before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


async def bench_storage(
    target: Target,
    options: BenchOptions,
    *,
    namespace: str | None = None,
    emit: Callable[[Row], None] = lambda row: None,
    note: Callable[[str], None] = lambda text: None,
    begin: Callable[[int, int], None] = lambda keys, concurrency: None,
) -> list[Row]:
    """Measure ``target``; ``emit`` each row as it is done, ``note`` what was left out.

    ``begin(keys, concurrency)`` is called as each figure starts (progress display).
    """
    namespace = namespace or new_namespace()
    parsed = StorageURL.parse(target.url)
    label = target.label
    storage = open_storage(target.url)
    closers: list[Callable[[], Awaitable[None]]] = [storage.close]
    rows: list[Row] = []
    failed = False
    try:
        kelpie = KelpieSide(storage, namespace, "a")
        closers.insert(0, kelpie.close)
        spread: ProcessSide | None = None
        if options.processes > 1:
            if parsed.scheme == "memory":
                note(f"{label}: a memory store is one process's own: measured in one process")
            else:
                spread = ProcessSide(target.url, namespace, options.processes)
                closers.insert(0, spread.close)
        raw: RawBaseline | None = open_raw(parsed, namespace)
        if raw is None:
            note(f"{label}: no raw baseline for {parsed.scheme}:// (raw columns n/a)")
        else:
            closers.insert(0, raw.close)
        off: KelpieSide | None = None
        if options.compare_off:
            off = _open_off(target, namespace, closers, note)
        for keys in options.keys:
            for concurrency in options.concurrencies:
                begin(keys, concurrency)
                sides: dict[str, Side] = {
                    "kelpie": kelpie.calls(concurrency, keys)
                    if spread is None
                    else spread.figure(concurrency, keys)
                }
                if raw is not None:
                    sides["raw"] = raw.calls(concurrency, keys)
                if off is not None:
                    sides["off"] = off.calls(concurrency, keys)
                for side in sides.values():
                    await warm_up(side)
                stats = kelpie.batch_stats if spread is None else spread.batch_stats
                before = stats()
                samples = await alternate(sides, options.seconds, options.slices)
                row = Row(
                    backend=label,
                    keys=keys,
                    concurrency=concurrency,
                    kelpie=samples["kelpie"],
                    raw=samples.get("raw"),
                    off=samples.get("off"),
                    mean_batch=_mean_batch(before, stats()),
                )
                rows.append(row)
                emit(row)
    except BaseException:
        failed = True
        raise
    finally:
        error = await _close_all(closers)
        if error is not None and not failed:
            raise error
    return rows


def _open_off(
    target: Target,
    namespace: str,
    closers: list[Callable[[], Awaitable[None]]],
    note: Callable[[str], None],
) -> KelpieSide | None:
    """Kelpie on the same URL with ``group_commit=False``, or None (noted) if unsupported.

    On LMDB both storages share the one environment of the directory (group
    commit is a per-storage option), so on and off pay the same fsyncs.
    """
    try:
        storage: Storage = open_storage(target.url, group_commit=False)
    except ConfigError as exc:
        note(f"{target.label}: comparison with group_commit=False unavailable: {exc}")
        return None
    side = KelpieSide(storage, namespace, "off-")
    closers.insert(0, side.close)
    closers.append(storage.close)
    return side


async def _close_all(closers: list[Callable[[], Awaitable[None]]]) -> BaseException | None:
    """Run every closer (each deletes what it wrote); return the first error, if any."""
    first: BaseException | None = None
    for close in closers:
        try:
            await close()
        except Exception as exc:
            first = first or exc
    return first
