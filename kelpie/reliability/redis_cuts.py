"""Redis connections cut at each point of a commit (``kelpie.testing.tcp_proxy``).

``cut_commits`` drives single transactions through a ``TcpProxy`` armed at one
``CutPoint`` each and judges the outcome the caller saw against what Redis
holds, read on a direct connection:

====================  ================  ==========================================
cut point             Redis holds       the caller must see
====================  ================  ==========================================
``after_watch``       what was acked    success (the commit reconnects; its version
                                        check needs no pinned connection, ADR 0008)
                                        or ``CommitOutcomeUnknownError``
``before_multi``      nothing           ``StorageUnavailableError`` or ``CommitOutcomeUnknownError``
``inside_block``      nothing           ``StorageUnavailableError`` or ``CommitOutcomeUnknownError``
``after_exec``        the whole commit  ``CommitOutcomeUnknownError``
====================  ================  ==========================================

(``after_watch`` is the cut after a transaction's first read; ``*_multi``,
``*_block`` and ``*_exec`` name the points of the commit, which is one call of
the check-and-set script.)

With ``commit="multi"`` (ADR 0011) the commit is a ``MULTI``/``EXEC`` block
and a cut ``after_watch`` takes the transaction's ``WATCH`` with it: the
commit must then report ``StorageUnavailableError`` (found before sending) or
``CommitOutcomeUnknownError`` (sent down the dying socket), and Redis holds
nothing. The other points are judged as in the table.

Never a plain success for a commit that did not land, never a plain failure
for one that did, never half a commit; and the next commit through the same
storage works without help. ``ledger_through_cuts`` runs the ledger workload
(runtime, retries with idempotency keys, every ledger invariant) through a
proxy cutting commits at random points.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections import Counter
from dataclasses import dataclass, field

from kelpie.dst.faults import FaultPlan
from kelpie.dst.harness import SeedResult, SimConfig, Simulation, run_seed
from kelpie.dst.workloads.ledger import LedgerWorkload
from kelpie.errors import KelpieError
from kelpie.identity import ActorId
from kelpie.reliability.faults import outcome_of
from kelpie.storage.protocol import Storage
from kelpie.storage.redis.storage import open_redis
from kelpie.testing.tcp_proxy import CutPoint, TcpProxy, ThreadedProxy

__all__ = ["CutReport", "cut_commits", "ledger_through_cuts"]

HANG_GUARD = 30.0
"""Only a guard against hangs: no outcome depends on time."""

# (whether Redis holds the commit, None = as reported; the outcomes allowed)
_ALLOWED: dict[CutPoint, tuple[bool | None, set[str]]] = {
    CutPoint.AFTER_WATCH: (None, {"ok", "unknown"}),
    CutPoint.BEFORE_MULTI: (False, {"unavailable", "unknown"}),
    CutPoint.INSIDE_BLOCK: (False, {"unavailable", "unknown"}),
    CutPoint.AFTER_EXEC: (True, {"unknown"}),
}
_ALLOWED_MULTI = {**_ALLOWED, CutPoint.AFTER_WATCH: (False, {"unavailable", "unknown"})}


@dataclass
class CutReport:
    """Cuts made per point, what callers saw, and every violation."""

    cuts: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    lost_acks: int = 0
    ledger_runs: int = 0
    ledger_acknowledged: int = 0

    def merge(self, other: CutReport) -> None:
        self.cuts.update(other.cuts)
        self.outcomes.update(other.outcomes)
        self.violations += other.violations
        self.lost_acks += other.lost_acks
        self.ledger_runs += other.ledger_runs
        self.ledger_acknowledged += other.ledger_acknowledged


async def cut_commits(
    redis_port: int,
    count: int,
    *,
    seed: int = 0,
    points: tuple[CutPoint, ...] = tuple(CutPoint),
    commit: str = "script",
) -> CutReport:
    """``count`` commits, each cut at a point drawn from ``points`` (cycled, then shuffled).

    ``commit``: the storage's commit mode (``script`` or ``multi``).
    """
    rng = random.Random(seed)
    report = CutReport()
    prefix = f"cuts-{secrets.token_hex(4)}"  # a fresh key space per call
    direct = open_redis(f"redis://127.0.0.1:{redis_port}/0", prefix=prefix)
    # Load the commit script first: a cut reply to a NOSCRIPT (nothing ran) proves nothing.
    await direct.set(ActorId("cuts", "warm-up"), b"k", b"v")
    async with TcpProxy(redis_port, seed=seed) as proxy:
        storage = open_redis(proxy.url(), prefix=prefix, socket_timeout=10.0, commit=commit)
        allowed = _ALLOWED_MULTI if commit == "multi" else _ALLOWED
        try:
            schedule = [points[i % len(points)] for i in range(count)]
            rng.shuffle(schedule)
            for number, point in enumerate(schedule):
                write_only = point != CutPoint.AFTER_WATCH and rng.random() < 0.3
                actor = ActorId("cuts", f"a{number % 7}")
                await _one_cut(
                    report, proxy, storage, direct, actor, point, number, write_only, allowed
                )
        finally:
            await storage.close()
            await direct.close()
    return report


async def _one_cut(
    report: CutReport,
    proxy: TcpProxy,
    storage: Storage,
    direct: Storage,
    actor: ActorId,
    point: CutPoint,
    number: int,
    write_only: bool,
    table: dict[CutPoint, tuple[bool | None, set[str]]],
) -> None:
    value = b"%d" % number
    what = f"cut #{number} at {point} ({'write-only' if write_only else 'read-write'})"
    proxy.arm(point)

    async def attempt() -> None:
        async with storage.transaction(actor) as txn:
            if not write_only:
                await txn.get(b"n")
            await txn.set(b"n", value)
            await txn.set(b"m", value)

    outcome = await outcome_of(attempt(), HANG_GUARD)
    report.cuts[point.value] += 1
    report.outcomes[f"{point}:{outcome}"] += 1
    landed_n = await direct.get(actor, b"n") == value
    landed_m = await direct.get(actor, b"m") == value
    expect_landed, allowed = table[point]
    if landed_n != landed_m:
        report.violations.append(f"{what}: torn commit (n landed {landed_n}, m {landed_m})")
    if outcome not in allowed:
        report.violations.append(f"{what}: the caller saw {outcome}, expected one of {allowed}")
    if expect_landed is not None and landed_n != expect_landed:
        report.violations.append(f"{what}: landed={landed_n}, Redis should hold {expect_landed}")
    if outcome == "ok" and not landed_n:
        report.lost_acks += 1
        report.violations.append(f"{what}: acknowledged but not stored")
    if outcome == "unavailable" and landed_n:
        report.violations.append(f"{what}: reported 'nothing written' but it landed")
    # The storage carries on by itself: the next commit through the proxy lands.
    try:
        async with asyncio.timeout(HANG_GUARD):
            await storage.set(actor, b"after", value)
            stored = await storage.get(actor, b"after")
    except (KelpieError, TimeoutError) as exc:
        report.violations.append(f"{what}: the storage did not recover: {exc!r}")
        return
    if stored != value:
        report.violations.append(f"{what}: the commit after the cut read back {stored!r}")
    if proxy.armed:  # an armed cut that never fired proves nothing
        report.violations.append(f"{what}: the cut never fired")
        proxy.disarm()


class _LedgerThroughProxy(LedgerWorkload):
    """The ledger; before the final check the proxy stops cutting (faults off)."""

    def __init__(self, proxy: ThreadedProxy, accounts: int) -> None:
        super().__init__(accounts=accounts)
        self._proxy = proxy

    async def check(self, sim: Simulation) -> None:
        self._proxy.disarm()
        await super().check(sim)


def ledger_through_cuts(
    redis_port: int,
    *,
    seed: int = 0,
    probability: float = 0.15,
    clients: int = 3,
    steps: int = 30,
    commit: str = "script",
) -> tuple[CutReport, SeedResult]:
    """The ledger workload through a proxy cutting commits at random points.

    ``commit``: the storage's commit mode (``script`` or ``multi``).
    """
    report = CutReport(ledger_runs=1)
    with ThreadedProxy(redis_port, seed=seed) as proxy:
        proxy.random_cuts(probability)
        config = SimConfig(
            seed=seed,
            faults=FaultPlan.none(),
            clients=clients,
            steps=steps,
            attempts=12,
            storage_url=proxy.url() + ("" if commit == "script" else f"?commit={commit}"),
            invocation_timeout=30.0,
        )
        result = run_seed(lambda: _LedgerThroughProxy(proxy, 4), config)
        report.cuts.update(proxy.cuts())
    report.violations += [f"ledger seed {seed}: {v}" for v in result.violations]
    report.lost_acks += sum("was lost" in v for v in result.violations)
    report.ledger_acknowledged += result.acknowledged
    return report, result
