"""Where an invocation's time goes: CPU (user, system) per invocation by concurrency.

    python benchmarks/cpu_per_invocation.py [--concurrency 1,64] [--seconds 3]
                                            [--backends memory,lmdb,redis]

N actors (N = concurrency) each invoke ``BenchActor.write`` (one state change,
one KV key, one commit) in a loop through one ``Runtime`` for S seconds. For
each figure the script prints invocations/s, how many cores the process used
meanwhile (CPU time / wall time, from ``getrusage``: every thread, user and
system), and the CPU per invocation split into user and system time, with
the voluntary context switches per invocation.

Why it matters: once group commit has taken the fsync or the round trip out
of each commit, a process that uses one core whatever the concurrency can
only scale from 1 to N actors by as much as its CPU per invocation drops, so
the 64/1 throughput ratio is about cpu(1) / cpu(64) (times the ratio of cores
used). See docs/performance.md. LMDB runs in a temporary directory with
``sync`` on; Redis on a private ``redis-server`` on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kelpie import open_storage
from kelpie.bench.timing import Call
from kelpie.bench.workload import KelpieSide


async def measure(label: str, url: str, concurrency: int, seconds: float) -> None:
    storage = open_storage(url)
    side = KelpieSide(storage, "cpu-per-invocation", f"c{concurrency}-")
    try:
        calls = side.calls(concurrency, 1)
        for call in calls:  # activate every actor before measuring
            await call()
        done = 0
        deadline = time.perf_counter() + seconds

        async def drive(call: Call) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await call()
                done += 1

        before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        await asyncio.gather(*(drive(call) for call in calls))
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall
    finally:
        await side.close()
        await storage.close()
    user = (after.ru_utime - before.ru_utime) / done * 1e6
    system = (after.ru_stime - before.ru_stime) / done * 1e6
    switches = (after.ru_nvcsw - before.ru_nvcsw) / done
    cores = (user + system) * done / 1e6 / wall
    print(
        f"{label:<7} {concurrency:>6} {done / wall:>9,.0f} {cores:>6.2f} "
        f"{user + system:>8.0f} {user:>6.0f} {system:>6.0f} {switches:>8.2f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--concurrency", default="1,64", help="comma-separated (default 1,64)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure (default 3)")
    parser.add_argument("--backends", default="memory,lmdb,redis", help="comma-separated")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    print("backend actors     inv/s  cores  cpu us/inv  user    sys  vol.cs/inv", flush=True)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kelpie-cpu-")))
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if backend == "memory":
                url = "memory://"
            elif backend == "lmdb":
                url = f"lmdb://{tmp}/lmdb"
            elif backend == "redis":
                from kelpie.testing.redis_server import RedisServer

                (tmp / "redis").mkdir()
                server = RedisServer(tmp / "redis")
                server.start()
                stack.callback(server.stop)
                url = server.url
            else:
                parser.error(f"unknown backend {backend!r}")
            for concurrency in concurrencies:
                asyncio.run(measure(backend, url, concurrency, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
