"""Storage commits/s of the two Redis commit modes, side by side in one process (ADR 0011).

    python benchmarks/redis_commit_modes.py [--seconds S] [--rounds N]

One private ``redis-server`` (no persistence). Two transaction shapes, each
at 1 and at 64 concurrent actors: ``rmw`` reads a key and writes it back
(read-write, conflict-checked), ``write`` sets one key (write-only, never
conflicts). Per figure the two modes alternate ``--rounds`` times (machine
noise hits both) and the best round of each is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kelpie.identity import ActorId
from kelpie.storage.redis.storage import RedisStorage, open_redis
from kelpie.testing.redis_server import RedisServer

Shape = Callable[[RedisStorage, ActorId, float], Awaitable[int]]


async def read_modify_write(store: RedisStorage, actor: ActorId, stop: float) -> int:
    done = 0
    while time.perf_counter() < stop:
        async with store.transaction(actor) as txn:
            value = await txn.get(b"n")
            await txn.set(b"n", b"%d" % (int(value or b"0") + 1))
        done += 1
    return done


async def write_only(store: RedisStorage, actor: ActorId, stop: float) -> int:
    done = 0
    while time.perf_counter() < stop:
        await store.set(actor, b"w", b"x" * 16)
        done += 1
    return done


async def rate(url: str, mode: str, shape: Shape, actors: int, seconds: float, tag: str) -> float:
    async with open_redis(url, commit=mode, prefix=f"modes-{tag}") as store:
        await shape(store, ActorId("warm", "up"), time.perf_counter() + 0.3)
        start = time.perf_counter()
        stop = start + seconds
        counts = await asyncio.gather(
            *(shape(store, ActorId("bench", f"a{i}"), stop) for i in range(actors))
        )
        return sum(counts) / (time.perf_counter() - start)


async def main(seconds: float, rounds: int) -> None:
    shapes: dict[str, Shape] = {"rmw": read_modify_write, "write": write_only}
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        print(f"{'shape':6} {'actors':>6} {'script/s':>10} {'multi/s':>10} {'multi/script':>13}")
        for name, shape in shapes.items():
            for actors in (1, 64):
                best = {"script": 0.0, "multi": 0.0}
                for round_ in range(rounds):
                    for mode in best:
                        tag = f"{name}-{actors}-{mode}-{round_}"
                        got = await rate(server.url, mode, shape, actors, seconds, tag)
                        best[mode] = max(best[mode], got)
                script, multi = best["script"], best["multi"]
                print(
                    f"{name:6} {actors:6} {script:10,.0f} {multi:10,.0f} {multi / script:13.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rounds))
