"""PostgreSQL under real faults: commits cut around ``COMMIT``, the server SIGKILLed mid-load.

``cut_commits`` drives single transactions through a ``PgProxy`` armed at one
``PgCut`` each and judges what the caller saw against what the table holds,
read on a direct connection:

==================  ===============  ===========================================
cut point           the table holds  the caller must see
==================  ===============  ===========================================
``before_commit``   nothing          ``StorageUnavailableError`` or ``CommitOutcomeUnknownError``
``after_commit``    the whole commit ``CommitOutcomeUnknownError``
==================  ===============  ===========================================

``counters_through_kills`` runs many concurrent read-modify-write commits
(group commit at work) while a thread SIGKILLs the whole server and restarts
it: every acknowledged commit must survive, no commit may be torn.
``ledger_through_cuts`` and ``ledger_through_kills`` run the ledger workload
(runtime, retries with idempotency keys, every ledger invariant) through
random cuts and through kills.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field

from kelpie.dst.faults import FaultPlan
from kelpie.dst.harness import SeedResult, SimConfig, Simulation, run_seed
from kelpie.dst.workloads.ledger import LedgerWorkload
from kelpie.errors import CommitOutcomeUnknownError, KelpieError
from kelpie.identity import ActorId
from kelpie.reliability.faults import ServerKiller, outcome_of
from kelpie.storage.postgres import open_postgres
from kelpie.storage.protocol import Storage
from kelpie.testing.postgres_proxy import PgCut, PgProxy, ThreadedPgProxy
from kelpie.testing.postgres_server import SUPERUSER, PostgresServer

__all__ = [
    "FaultReport",
    "counters_through_kills",
    "cut_commits",
    "ledger_through_cuts",
    "ledger_through_kills",
]

HANG_GUARD = 60.0
"""Only a guard against hangs: no outcome depends on time."""

_ALLOWED: dict[PgCut, tuple[bool, set[str]]] = {
    PgCut.BEFORE_COMMIT: (False, {"unavailable", "unknown"}),
    PgCut.AFTER_COMMIT: (True, {"unknown"}),
}


@dataclass
class FaultReport:
    """Cuts or kills made, what callers saw, and every violation."""

    cuts: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    lost_acks: int = 0
    acknowledged: int = 0
    restarts: int = 0


def _proxied(server: PostgresServer, port: int, table: str) -> str:
    return (
        f"postgresql://{SUPERUSER}:{server.password}@127.0.0.1:{port}/postgres"
        f"?table={table}&sslmode=disable&connect_timeout=5"
    )


async def cut_commits(
    server: PostgresServer,
    count: int,
    *,
    seed: int = 0,
    points: tuple[PgCut, ...] = tuple(PgCut),
    delete_every: int = 0,
) -> FaultReport:
    """``count`` commits, each cut at a point drawn from ``points`` (cycled, then shuffled).

    ``delete_every=N``: every Nth cut operation is a ``delete_actor`` (an
    explicit transaction whose ``COMMIT`` is cut) instead of a commit.
    """
    rng = random.Random(seed)
    report = FaultReport()
    table = f"cuts_{secrets.token_hex(4)}"
    direct = open_postgres(server.url(table=table))
    async with PgProxy(server.port, seed=seed) as proxy:
        storage = open_postgres(_proxied(server, proxy.port, table))
        try:
            schedule = [points[i % len(points)] for i in range(count)]
            rng.shuffle(schedule)
            for number, point in enumerate(schedule):
                actor = ActorId("cuts", f"a{number % 7}")
                deleting = delete_every > 0 and number % delete_every == delete_every - 1
                await _one_cut(report, proxy, storage, direct, actor, point, number, deleting)
        finally:
            await storage.close()
            await direct.close()
    return report


async def _one_cut(
    report: FaultReport,
    proxy: PgProxy,
    storage: Storage,
    direct: Storage,
    actor: ActorId,
    point: PgCut,
    number: int,
    deleting: bool,
) -> None:
    value = b"%d" % number
    if deleting:
        await direct.set(actor, b"n", value)
    what = f"cut #{number} at {point} ({'delete_actor' if deleting else 'commit'})"
    await storage.get(actor, b"n")  # a live pooled connection: the cut hits the commit
    proxy.arm(point)

    async def attempt() -> None:
        if deleting:
            await storage.delete_actor(actor)
        else:
            async with storage.transaction(actor) as txn:
                await txn.get(b"n")
                await txn.set(b"n", value)
                await txn.set(b"m", value)

    outcome = await outcome_of(attempt(), HANG_GUARD)
    report.outcomes[f"{point}:{outcome}"] += 1
    if deleting:
        landed = await direct.list_keys(actor) == []
        torn = False
    else:
        landed = await direct.get(actor, b"n") == value
        torn = landed != (await direct.get(actor, b"m") == value)
    expect_landed, allowed = _ALLOWED[point]
    if torn:
        report.violations.append(f"{what}: torn commit")
    if outcome not in allowed:
        report.violations.append(f"{what}: the caller saw {outcome}, expected one of {allowed}")
    if landed != expect_landed:
        report.violations.append(f"{what}: landed={landed}, the table should say {expect_landed}")
    if outcome == "ok":
        report.acknowledged += 1
        if not landed:
            report.lost_acks += 1
            report.violations.append(f"{what}: acknowledged but not stored")
    if outcome == "unavailable" and landed:
        report.violations.append(f"{what}: reported 'nothing written' but it landed")
    try:  # the storage carries on by itself
        async with asyncio.timeout(HANG_GUARD):
            await storage.set(actor, b"after", value)
            stored = await storage.get(actor, b"after")
    except (KelpieError, TimeoutError) as exc:
        report.violations.append(f"{what}: the storage did not recover: {exc!r}")
        return
    if stored != value:
        report.violations.append(f"{what}: the commit after the cut read back {stored!r}")
    if proxy.armed:
        report.violations.append(f"{what}: the cut never fired")
        proxy.disarm()
    report.cuts[point.value] = proxy.cuts[point.value]


async def counters_through_kills(
    server: PostgresServer, kills: int, *, seed: int = 0, actors: int = 16, tasks: int = 48
) -> FaultReport:
    """``tasks`` concurrent increment loops over ``actors`` counters while the server dies.

    Each commit reads ``n`` and writes ``n+1`` to both ``n`` and ``m``. Checked
    after the last restart: ``n == m`` (no torn commit) and ``n`` is at least
    the highest acknowledged value (no acknowledged commit lost).
    """
    report = FaultReport()
    storage = open_postgres(server.url(table=f"kills_{secrets.token_hex(4)}", connect_timeout="2"))
    ids = [ActorId("kills", f"c{i}") for i in range(actors)]
    acked: dict[ActorId, int] = dict.fromkeys(ids, 0)
    killer = ServerKiller(server, kills, random.Random(seed), up=(0.3, 1.0), down=(0.0, 0.3))

    async def loop(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        while not killer.done.is_set():
            actor = rng.choice(ids)
            try:
                async with asyncio.timeout(HANG_GUARD):
                    async with storage.transaction(actor) as txn:
                        current = int(await txn.get(b"n") or b"0")
                        await txn.set(b"n", b"%d" % (current + 1))
                        await txn.set(b"m", b"%d" % (current + 1))
            except CommitOutcomeUnknownError:
                report.outcomes["unknown"] += 1
            except KelpieError as exc:
                report.outcomes[type(exc).__name__] += 1
                await asyncio.sleep(0.01)
            except TimeoutError:
                report.violations.append("a commit hung")
                return
            else:
                report.outcomes["ok"] += 1
                report.acknowledged += 1
                acked[actor] = max(acked[actor], current + 1)

    killer.start()
    try:
        await asyncio.gather(*(loop(i) for i in range(tasks)))
        await asyncio.to_thread(killer.join)
        for actor in ids:
            n = int(await storage.get(actor, b"n") or b"0")
            m = int(await storage.get(actor, b"m") or b"0")
            if n != m:
                report.violations.append(f"{actor}: torn commit (n={n}, m={m})")
            if n < acked[actor]:
                report.lost_acks += acked[actor] - n
                report.violations.append(f"{actor}: holds {n}, {acked[actor]} was acknowledged")
    finally:
        await storage.close()
    if killer.error is not None:
        report.violations.append(f"the server could not be restarted: {killer.error!r}")
    report.restarts = killer.restarts
    return report


class _LedgerUntil(LedgerWorkload):
    """The ledger; steps stop once ``stop`` is set, faults end before the final check."""

    def __init__(self, stop: threading.Event | None, quiet: ThreadedPgProxy | None) -> None:
        super().__init__(accounts=4)
        self._stop, self._quiet = stop, quiet

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
        if self._stop is not None and self._stop.is_set():
            return
        await super().step(sim, client, rng)

    async def check(self, sim: Simulation) -> None:
        if self._quiet is not None:
            self._quiet.disarm()
        if self._stop is not None:
            await asyncio.to_thread(self._stop.wait)
        await super().check(sim)


def _ledger_report(result: SeedResult, seed: int, report: FaultReport) -> FaultReport:
    report.violations += [f"ledger seed {seed}: {v}" for v in result.violations]
    report.lost_acks += sum("was lost" in v for v in result.violations)
    report.acknowledged += result.acknowledged
    return report


def ledger_through_cuts(
    server: PostgresServer, *, seed: int = 0, probability: float = 0.2, steps: int = 30
) -> tuple[FaultReport, SeedResult]:
    """The ledger workload through a proxy cutting commits at random points."""
    report = FaultReport()
    with ThreadedPgProxy(server.port, seed=seed) as proxy:
        proxy.random_cuts(probability)
        config = SimConfig(
            seed=seed,
            faults=FaultPlan.none(),
            clients=3,
            steps=steps,
            attempts=12,
            storage_url=_proxied(server, proxy.port, f"ledger_{secrets.token_hex(4)}"),
            invocation_timeout=30.0,
        )
        result = run_seed(lambda: _LedgerUntil(None, proxy), config)
        report.cuts.update(proxy.cuts())
    return _ledger_report(result, seed, report), result


def ledger_through_kills(server: PostgresServer, kills: int, *, seed: int = 0) -> FaultReport:
    """The ledger workload while the server is SIGKILLed ``kills`` times and restarted."""
    report = FaultReport()
    killer = ServerKiller(server, kills, random.Random(seed), up=(0.3, 1.0), down=(0.0, 0.3))
    config = SimConfig(
        seed=seed,
        faults=FaultPlan.none(),
        clients=3,
        steps=100_000,  # until the kills are over (see _LedgerUntil.step)
        attempts=200,
        storage_url=server.url(table=f"ledger_{secrets.token_hex(4)}", connect_timeout="2"),
        invocation_timeout=30.0,
    )
    killer.start()
    result = run_seed(lambda: _LedgerUntil(killer.done, None), config)
    killer.join()
    if killer.error is not None:
        report.violations.append(f"the server could not be restarted: {killer.error!r}")
    report.restarts = killer.restarts
    return _ledger_report(result, seed, report)
