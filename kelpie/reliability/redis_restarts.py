"""``redis-server`` SIGKILLed under load and restarted: nothing acknowledged is lost.

``ledger_through_restarts`` runs the ledger workload (runtime, retries with
idempotency keys, every ledger invariant, including "no acknowledged operation
lost") against a server with AOF and ``appendfsync always`` while a second
thread SIGKILLs the server at random moments and starts it again on the same
port and data directory. ``outage`` kills the server under a live runtime and
checks that invocations fail with ``StorageUnavailableError`` (bounded by the
connect timeout, no hang) and that the same runtime carries on once the
server is back.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path

from kelpie.dst.faults import FaultPlan
from kelpie.dst.harness import SimConfig, Simulation, run_seed
from kelpie.dst.workloads.ledger import LedgerAccount, LedgerWorkload
from kelpie.errors import KelpieError, StorageUnavailableError
from kelpie.identity import ActorId
from kelpie.reliability.faults import ServerKiller
from kelpie.runtime import Runtime
from kelpie.storage.redis.storage import open_redis
from kelpie.testing.redis_server import RedisServer

__all__ = ["RestartReport", "ledger_through_restarts", "outage"]

HANG_GUARD = 30.0


@dataclass
class RestartReport:
    restarts: int = 0
    acknowledged: int = 0
    violations: list[str] = field(default_factory=list)
    lost_acks: int = 0
    slowest_failure: float = 0.0
    """Longest wait (s) for an invocation to fail while the server was down."""


class _LedgerUnderKills(LedgerWorkload):
    """The ledger; before the final check every kill is over and the server is up."""

    def __init__(self, killer: ServerKiller) -> None:
        super().__init__(accounts=4)
        self._killer = killer

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
        if self._killer.done.is_set():
            return  # the kills are over: the run has shown what it can
        await super().step(sim, client, rng)

    async def check(self, sim: Simulation) -> None:
        await asyncio.to_thread(self._killer.join)
        await super().check(sim)


def ledger_through_restarts(
    server: RedisServer, restarts: int, *, seed: int = 0, clients: int = 3
) -> RestartReport:
    """The ledger against ``server`` (AOF, ``appendfsync always``) killed ``restarts`` times."""
    report = RestartReport()
    killer = ServerKiller(server, restarts, random.Random(seed), up=(0.05, 0.4), down=(0.0, 0.2))
    config = SimConfig(
        seed=seed,
        faults=FaultPlan.none(),
        clients=clients,
        steps=100_000,  # until the kills are over (see _LedgerUnderKills.step)
        attempts=200,
        storage_url=server.url + "?socket_timeout=5&connect_timeout=1",
        invocation_timeout=30.0,
    )
    killer.start()
    result = run_seed(lambda: _LedgerUnderKills(killer), config)
    killer.join()
    if killer.error is not None:
        report.violations.append(f"the server could not be restarted: {killer.error!r}")
    report.restarts = killer.restarts
    report.acknowledged = result.acknowledged
    report.violations += [f"ledger seed {seed}: {v}" for v in result.violations]
    report.lost_acks = sum("was lost" in v for v in result.violations)
    return report


async def outage(server: RedisServer, directory: Path | None = None) -> RestartReport:
    """Kill the server under a live runtime: bounded ``StorageUnavailableError``, then recovery."""
    report = RestartReport()
    storage = open_redis(server.url, socket_timeout=2.0, connect_timeout=1.0)
    actors = [ActorId("ledger", f"outage{i}") for i in range(3)]
    try:
        async with Runtime(storage) as runtime:
            runtime.register("ledger", LedgerAccount)
            for number, actor in enumerate(actors):
                await runtime.invoke(actor, "apply", {"op": f"before{number}", "delta": 10})
            server.kill()
            loop = asyncio.get_running_loop()
            for number, actor in enumerate(actors * 2):
                started = loop.time()
                try:
                    async with asyncio.timeout(HANG_GUARD):
                        await runtime.invoke(actor, "apply", {"op": f"down{number}", "delta": 1})
                except StorageUnavailableError:
                    pass
                except (KelpieError, TimeoutError) as exc:
                    report.violations.append(f"while redis was down: {exc!r}")
                else:
                    report.violations.append("an invocation succeeded while redis was down")
                report.slowest_failure = max(report.slowest_failure, loop.time() - started)
            server.start()
            report.restarts = 1
            for number, actor in enumerate(actors):
                try:
                    async with asyncio.timeout(HANG_GUARD):
                        balance = await runtime.invoke(
                            actor, "apply", {"op": f"after{number}", "delta": 5}
                        )
                except (KelpieError, TimeoutError) as exc:
                    report.violations.append(f"the runtime did not carry on: {exc!r}")
                    continue
                report.acknowledged += 1
                if balance != 15:
                    report.violations.append(f"{actor}: balance {balance} after restart, not 15")
    finally:
        await storage.close()
    return report
