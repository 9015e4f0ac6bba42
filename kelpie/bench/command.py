"""``kelpie bench``: invocations/s and latency through the runtime, beside the raw client.

The table goes to stdout as each figure is measured; progress goes to stderr
(``kelpie.bench.progress``; ``--quiet``: none).

Exit status: 0 when every figure was measured; 2 for a bad argument, a bad
storage URL or a storage that fails (unreachable server, …) — one line on
stderr, never a traceback, never a password.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from kelpie.bench.measure import BenchOptions, Target, bench_storage, check_url, new_namespace
from kelpie.bench.progress import BenchProgress
from kelpie.bench.report import Row, format_header, format_row, summary_lines
from kelpie.bench.targets import default_targets, user_targets
from kelpie.bench.transfers import (
    TransferRow,
    bench_transfers,
    format_transfer_header,
    format_transfer_row,
    transfer_summary_lines,
)
from kelpie.errors import ConfigError, KelpieError
from kelpie.storage.url import StorageURL

__all__ = ["WORKLOADS", "add_arguments", "main", "parse_options", "run"]

WORKLOADS = ("invocations", "transfers")
_MAX_CONCURRENCY = 10_000
_MAX_KEYS = 1_000
_MAX_SECONDS = 3600
_TICK = 0.25  # seconds between redraws of the progress bar on a terminal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``kelpie bench`` options on ``parser``."""
    parser.add_argument(
        "--storage",
        metavar="URL",
        action="append",
        help="a storage URL to measure (repeatable); default: memory://, LMDB and SQLite in a "
        "temporary directory, Redis on a private redis-server (if on PATH) in both commit modes "
        "and PostgreSQL on a private server (if installed)",
    )
    parser.add_argument(
        "--concurrency",
        default="1,8,64",
        metavar="N,N,...",
        help="concurrent actors, comma-separated (default 1,8,64)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        metavar="S",
        help="per figure and side, split into alternating slices: more than 0, at most "
        f"{_MAX_SECONDS} (default 3)",
    )
    parser.add_argument(
        "--keys",
        default="1",
        metavar="K,K,...",
        help="KV keys written per invocation; several (e.g. 1,100) also print the cost "
        "ratio (default 1)",
    )
    parser.add_argument(
        "--compare-off",
        action="store_true",
        help="also measure each storage with group_commit=False and print the speed-up",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="run kelpie's side in N runtime processes sharing the store, the actors split "
        "among them (LMDB, Redis; default 1)",
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=3,
        metavar="N",
        help="alternating slices per figure (default 3)",
    )
    parser.add_argument(
        "--workload",
        default="invocations",
        metavar="NAME",
        help="invocations: kelpie beside the raw client (default); transfers: transfers/s "
        "(a debit whose commit sends a credit, counted once applied) against plain "
        "invocations/s on the same backend",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress on stderr (the table is unchanged)"
    )


def _int_list(text: str, name: str, maximum: int) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{name} takes comma-separated integers, got {text!r}") from None
    if not values or not all(1 <= value <= maximum for value in values):
        raise ValueError(f"{name} takes integers from 1 to {maximum:,}, got {text!r}")
    return tuple(dict.fromkeys(values))


def parse_options(args: argparse.Namespace) -> BenchOptions:
    """The measurement options of ``args``; ``ValueError`` with a one-line reason if bad."""
    if not 0 < args.seconds <= _MAX_SECONDS:
        raise ValueError(
            f"--seconds must be more than 0 and at most {_MAX_SECONDS}, got {args.seconds:g}"
        )
    if not 1 <= args.slices <= 100:
        raise ValueError(f"--slices must be between 1 and 100, got {args.slices}")
    if not 1 <= args.processes <= 64:
        raise ValueError(f"--processes must be between 1 and 64, got {args.processes}")
    if args.workload not in WORKLOADS:
        raise ValueError(f"--workload must be one of {', '.join(WORKLOADS)}, got {args.workload!r}")
    keys = _int_list(args.keys, "--keys", _MAX_KEYS)
    if args.workload == "transfers":
        unsupported = [
            name
            for name, given in (
                ("--keys", keys != (1,)),
                ("--compare-off", args.compare_off),
                ("--processes", args.processes != 1),
            )
            if given
        ]
        if unsupported:
            raise ValueError(f"--workload transfers does not take {', '.join(unsupported)}")
    return BenchOptions(
        concurrencies=_int_list(args.concurrency, "--concurrency", _MAX_CONCURRENCY),
        seconds=args.seconds,
        keys=keys,
        compare_off=args.compare_off,
        slices=args.slices,
        processes=args.processes,
        workload=args.workload,
    )


def _one_line(exc: BaseException, secrets: Sequence[str]) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _passwords(urls: Sequence[str]) -> list[str]:
    found = []
    for url in urls:
        try:
            password = StorageURL.parse(url).password
        except ConfigError:
            continue
        if password:
            found.append(password)
    return found


def run(args: argparse.Namespace) -> int:
    """Run ``kelpie bench``; return the exit status."""
    urls: list[str] = list(args.storage or [])
    secrets = _passwords(urls)
    try:
        options = parse_options(args)
    except ValueError as exc:
        print(f"kelpie bench: {exc}", file=sys.stderr)
        return 2
    bench = _Bench(options, quiet=getattr(args, "quiet", False))
    try:
        if urls:
            targets = [_private(target) for target in user_targets(urls)]
            bench.on_user_store = True
            measured = False
            try:
                code = asyncio.run(bench.main(targets))
                measured = True
                return code
            finally:
                # After a failure (e.g. an unreachable server) its one line says it all.
                _drop_private(targets, urls, quiet=not measured)
        with default_targets(bench.note) as targets:
            return asyncio.run(bench.main(targets))
    except (KelpieError, OSError, RuntimeError) as exc:
        where = f"{bench.current.label} ({bench.current.shown}): " if bench.current else ""
        print(
            f"kelpie bench: {where}{type(exc).__name__}: {_one_line(exc, secrets)}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("kelpie bench: interrupted", file=sys.stderr)
        return 130


def _is_redis(url: str) -> bool:
    return StorageURL.parse(url).scheme in {"redis", "rediss", "unix", "redis+cluster"}


def _private(target: Target) -> Target:
    """On Redis, the target under a key prefix of the run's own below the URL's
    (``kelpie.storage.redis.scratch``): removed at the end, store-wide keys included."""
    if not _is_redis(target.url):
        return target
    from kelpie.storage.redis.scratch import scratch_url

    return Target(target.label, scratch_url(target.url, "bench"))


def _drop_private(targets: list[Target], urls: list[str], *, quiet: bool) -> None:
    from kelpie.storage.redis.scratch import drop_prefix

    for target in targets:
        if target.url in urls:
            continue  # not a private prefix: only delete_actor cleaned it
        try:
            asyncio.run(drop_prefix(target.url))
        except KelpieError as exc:
            if quiet:
                continue
            print(
                f"kelpie bench: could not remove the run's keys from {target.shown}: "
                f"{type(exc).__name__}",
                file=sys.stderr,
            )


class _Bench:
    """One ``kelpie bench`` run: header, streamed rows, summary and notes."""

    def __init__(self, options: BenchOptions, *, quiet: bool = False) -> None:
        self.options = options
        self.quiet = quiet
        self.progress: BenchProgress | None = None
        self.namespace = new_namespace()
        self.notes: list[str] = []
        self.current: Target | None = None
        self.rows: list[Row] = []
        self.transfer_rows: list[TransferRow] = []
        self.on_user_store = False

    def note(self, text: str) -> None:
        self.notes.append(text)

    def _flush_notes(self) -> None:
        for text in self.notes:
            print(text, flush=True)
        self.notes.clear()

    def _emit(self, row: Row) -> None:
        if self.progress is not None:
            self.progress.clear()
        print(format_row(row, self.options.compare_off), flush=True)
        if self.progress is not None:
            self.progress.end()

    def _emit_transfers(self, row: TransferRow) -> None:
        if self.progress is not None:
            self.progress.clear()
        print(format_transfer_row(row), flush=True)
        if self.progress is not None:
            self.progress.end()

    def _begin(self, keys: int, concurrency: int) -> None:
        if self.progress is not None and self.current is not None:
            self.progress.begin(self.current.label, keys, concurrency)

    def _start_progress(self, targets: list[Target]) -> asyncio.Task[None] | None:
        """Progress on stderr (unless ``--quiet``); on a terminal, a task redrawing the bar."""
        if self.quiet:
            return None
        o = self.options
        figures = len(targets) * len(o.keys) * len(o.concurrencies)
        sides = 2 + o.compare_off  # kelpie and the raw baseline, and group commit off
        self.progress = progress = BenchProgress(figures, o.seconds * sides)
        if not progress.tty:
            return None

        async def redraw() -> None:
            while True:
                await asyncio.sleep(_TICK)
                progress.tick()

        return asyncio.get_running_loop().create_task(redraw())

    async def main(self, targets: list[Target]) -> int:
        for target in targets:  # a bad URL or server fails before anything is measured
            self.current = target
            await check_url(target.url, self.namespace)
        self.current = None
        self._print_parameters(targets)
        self._flush_notes()
        print(flush=True)
        transfers = self.options.workload == "transfers"
        header = format_transfer_header() if transfers else format_header(self.options.compare_off)
        print(header, flush=True)
        redraw = self._start_progress(targets)
        try:
            for target in targets:
                self.current = target
                if transfers:
                    self.transfer_rows += await bench_transfers(
                        target,
                        self.options,
                        namespace=self.namespace,
                        owns_store=not self.on_user_store,
                        emit=self._emit_transfers,
                        begin=self._begin,
                    )
                    continue
                self.rows += await bench_storage(
                    target,
                    self.options,
                    namespace=self.namespace,
                    emit=self._emit,
                    note=self.note,
                    begin=self._begin,
                )
        finally:
            if redraw is not None:
                redraw.cancel()
            if self.progress is not None:
                self.progress.clear()
        self.current = None
        print()
        summary = transfer_summary_lines(self.transfer_rows) if transfers else []
        for line in summary + summary_lines(self.rows):
            print(line)
        self._flush_notes()
        if self.on_user_store:
            index = (
                " and the messaging index entries naming them (kelpie.index/*)" if transfers else ""
            )
            print(
                f"deleted every key the bench wrote (actors {self.namespace}/*{index}); a backend "
                "may keep a small version record per actor, which the Storage protocol cannot "
                "remove"
            )
        return 0

    def _print_parameters(self, targets: list[Target]) -> None:
        o = self.options
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(
            f"kelpie bench, {now}; python {platform.python_version()} on "
            f"{platform.system()}, {os.cpu_count()} CPUs"
        )
        last = max(o.concurrencies) - 1
        what = (
            f"workload transfers; accounts {self.namespace}/t0..t{last}"
            if o.workload == "transfers"
            else f"keys per invocation: {','.join(map(str, o.keys))}; "
            f"actors {self.namespace}/a0..a{last}"
        )
        print(
            f"{o.seconds:g} s per figure and side, in {o.slices} alternating slices; {what}"
            + (
                f"; kelpie's side in {o.processes} runtime processes (memory: in one)"
                if o.processes > 1
                else ""
            )
        )
        print("backends: " + "; ".join(f"{t.label} = {t.shown}" for t in targets))
        if o.workload == "transfers":
            print(
                "inv/s, p99: plain invocations (one commit each) of N accounts by N clients; "
                "transfers/s: a debit whose commit sends a credit (ctx.send) to another account, "
                "counted once the credit was applied (a slice ends when every credit is); "
                "debit p99: the debit's latency; ratio = transfers/s / inv/s (issue 16 target: "
                ">= 0.4); batch = mean commits per group-commit batch during the transfers"
            )
            return
        print(
            "inv/s, p50, p99: Runtime.invoke (state change + KV writes, one commit); "
            "raw: the same writes with the backend's own client (memory: a dict; lmdb: a py-lmdb "
            "write txn in a thread; sqlite: a sqlite3 txn in a thread; redis: WATCH/HGET + "
            "MULTI/HSET/EXEC; postgres: an asyncpg txn with a version check, one pooled "
            "connection per actor); ratio = inv/s / raw/s; "
            "batch = mean commits per group-commit batch ('-': not reported)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``kelpie bench`` as a standalone program (``benchmarks/bench.py``)."""
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description="invocations/s and latency through the kelpie runtime, beside the raw client",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
