"""What group commit costs a lone caller: latency at concurrency 1, on and off, interleaved.

    python benchmarks/group_commit_latency.py [--rounds 20] [--slice 0.5] [--backends lmdb,redis]

One actor is invoked in a loop, one call at a time, through two runtimes on
the same store: one on a storage opened with ``group_commit=true`` (the
default), one with ``group_commit=false``. The two alternate in short slices
(the order flipping every round) so that machine noise hits both alike, and
the script prints p50, p99 and p99.9 of each and the change of p99 (issue 6:
at most 10% worse with group commit). LMDB: both storages share one
environment in a temporary directory (``sync`` on); Redis: a private
``redis-server`` on a free loopback port, each side under its own key prefix.
``kelpie bench --compare-off`` measures the same thing in coarser slices.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kelpie import ActorId, Runtime, Storage, open_storage
from kelpie.bench.workload import BenchActor

MODES = ("on", "off")


def _percentile(sorted_seconds: list[float], q: float) -> float:
    return sorted_seconds[min(len(sorted_seconds) - 1, int(len(sorted_seconds) * q))] * 1000.0


async def measure(
    url: str,
    rounds: int,
    slice_seconds: float,
    per_side: dict[str, dict[str, object]] | None = None,
) -> None:
    sides: dict[str, tuple[Storage, Runtime, ActorId]] = {}
    try:
        for mode in MODES:
            extra = (per_side or {}).get(mode, {})
            storage = open_storage(url, group_commit=mode == "on", **extra)
            runtime = Runtime(storage)
            runtime.register("gc-latency", BenchActor)
            actor = ActorId("gc-latency", mode)
            sides[mode] = (storage, runtime, actor)
            await runtime.invoke(actor, "write", 1)
        latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
        for round_ in range(rounds):
            for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                _, runtime, actor = sides[mode]
                into = latencies[mode]
                end = time.perf_counter() + slice_seconds
                while (start := time.perf_counter()) < end:
                    await runtime.invoke(actor, "write", 1)
                    into.append(time.perf_counter() - start)
        p99 = {}
        for mode in MODES:
            xs = sorted(latencies[mode])
            p99[mode] = _percentile(xs, 0.99)
            print(
                f"  group_commit={mode:<3}  calls {len(xs):>7,}  p50 {_percentile(xs, 0.5):.3f} ms"
                f"  p99 {p99[mode]:.3f} ms  p99.9 {_percentile(xs, 0.999):.3f} ms",
                flush=True,
            )
        change = (p99["on"] / p99["off"] - 1.0) * 100.0
        verdict = "met" if change <= 10.0 else "MISSED"
        print(f"  p99 with group commit vs without: {change:+.0f}% (target <= +10%: {verdict})")
    finally:
        for storage, runtime, _ in sides.values():
            await runtime.close()
            await storage.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20, help="alternations (default 20)")
    parser.add_argument("--slice", type=float, default=0.5, help="seconds per slice (default 0.5)")
    parser.add_argument("--backends", default="lmdb,redis", help="comma-separated: lmdb,redis")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kelpie-gc-")))
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            print(f"{backend}: one actor, one call at a time, {args.rounds} x 2 slices", flush=True)
            if backend == "lmdb":
                asyncio.run(measure(f"lmdb://{tmp}/lmdb", args.rounds, args.slice))
            elif backend == "redis":
                from kelpie.testing.redis_server import RedisServer

                (tmp / "redis").mkdir()
                server = RedisServer(tmp / "redis")
                server.start()
                stack.callback(server.stop)
                prefixes: dict[str, dict[str, object]] = {
                    mode: {"prefix": f"gc-latency-{mode}"} for mode in MODES
                }
                asyncio.run(measure(server.url, args.rounds, args.slice, prefixes))
            else:
                parser.error(f"unknown backend {backend!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
