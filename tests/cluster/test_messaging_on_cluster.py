"""Messages and reminders (issue 16) on a real 3+3 Redis Cluster, across runtime processes.

Three runtime processes with node ids and leases (``kelpie.testing.bank_node``)
share the cluster. Clients enter through any node, follow
``ActorActiveElsewhereError.owner`` and retry anything uncertain with the same
idempotency key. Each sender's transfers go one after the other, numbered per
(sender, target), so the targets' records (``received[sender]``, read straight
from the store) must be exactly ``1..n``: every message applied once, in send
order. The actors are chosen by hash slot so that senders and targets live on
different masters.

The failover test kills (SIGKILL) the master holding the reminders' actors and
half of the transfers' actors, with ``wait_replicas=1`` as docs/scale-out.md
§4 recommends: without ``WAIT`` Redis may lose acknowledged commits on a
failover (``test_failover.py`` counts such losses), and a lost cancel or a lost
fire would fire again; with it nothing acknowledged is lost, so each due time
fires once, a cancelled reminder never, and each message is applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kelpie import ActorId, Runtime, open_storage
from kelpie.errors import (
    ActorActiveElsewhereError,
    CommitOutcomeUnknownError,
    InvocationTimeoutError,
    MailboxFullError,
    StorageError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.messaging import records
from kelpie.storage.redis.keys import actor_keys
from kelpie.testing.bank_node import NAMESPACES, BankNode, Teller, read_teller, start_bank_nodes
from kelpie.testing.redis_cluster import RedisCluster, cluster_command, key_slot, wait_replicated
from kelpie.testing.runtime_node import NodeClient

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 1.0
DUE = 3.0
WATCH = 3.0
"""Seconds past the due time, the acknowledged cancel, the failover (and a fire) in which
a fire, or a second one, would show. A fire that is expected is waited for up to four
times as long: the sweep reaches a promoted master only once the client has found it,
and on a loaded machine that took longer than the 2.5 s this test once allowed."""
"""Seconds from setting to the due time of the reminder a lagging master's cancel targets."""
DEPOSIT = 1000
RETRYABLE = (
    StorageUnavailableError,
    CommitOutcomeUnknownError,
    TransactionConflictError,
    InvocationTimeoutError,
    MailboxFullError,
)


def _name(actor: ActorId) -> str:
    return f"{actor.namespace}/{actor.id}"


class Slots:
    """Which master serves an actor's hash slot (the topology as it was when built)."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.ranges = [
            (port, lo, hi)
            for port, (role, _, slots) in cluster.topology().items()
            if role == "master"
            for lo, hi in slots
        ]
        self.masters = sorted({port for port, _, _ in self.ranges})

    def master_of(self, actor: ActorId) -> int:
        slot = key_slot(actor_keys("any", actor).version)  # the prefix is outside the tag
        return next(port for port, lo, hi in self.ranges if lo <= slot <= hi)

    def actors_on(self, namespace: str, stem: str) -> dict[int, list[ActorId]]:
        """Master port -> actors ``namespace/stem<i>`` whose slot it serves (i < 200)."""
        found: dict[int, list[ActorId]] = {port: [] for port in self.masters}
        for i in range(200):
            actor = ActorId(namespace, f"{stem}{i}")
            found[self.master_of(actor)].append(actor)
        return found


class Router:
    """One client's connections to every node: enter anywhere, follow the lease owner."""

    def __init__(self, nodes: dict[str, BankNode], rng: random.Random, events: Counter[str]):
        self.rng = rng
        self.events = events
        self.clients = {node_id: NodeClient(node.port) for node_id, node in nodes.items()}

    async def invoke(
        self, actor: ActorId, op: str, payload: Any = None, *, key: str | None = None
    ) -> tuple[Any, str]:
        """Invoke until acknowledged (retrying with ``key``); the result and the node."""
        target = self.rng.choice(sorted(self.clients))
        while True:
            try:
                async with asyncio.timeout(20):  # a hang guard per attempt
                    return await self.clients[target].invoke(actor, op, payload, key=key), target
            except ActorActiveElsewhereError as exc:
                self.events["redirected"] += 1
                if exc.owner in self.clients:
                    target = exc.owner
                    continue
            except (OSError, TimeoutError):
                self.events["node timeout"] += 1
            except RETRYABLE as exc:
                self.events[type(exc).__name__] += 1
            target = self.rng.choice(sorted(self.clients))
            await asyncio.sleep(0.05)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


class Bank:
    """The transfers a test made, and the check of what the store holds."""

    def __init__(self, url: str, nodes: dict[str, BankNode], rng: random.Random) -> None:
        self.url = url
        self.nodes = nodes
        self.rng = rng
        self.events: Counter[str] = Counter()
        self.senders: list[ActorId] = []
        self.sent: dict[tuple[ActorId, ActorId], int] = {}
        """(sender, target) -> messages sent (the last seq)."""
        self.moved: Counter[ActorId] = Counter()
        """Actor -> money in (credits sent to it) minus money out (its transfers)."""
        self.acked: list[tuple[ActorId, ActorId, float]] = []
        """(sender, target, monotonic time) of each acknowledged transfer."""
        self.sent_via: Counter[str] = Counter()

    def router(self) -> Router:
        return Router(self.nodes, self.rng, self.events)

    async def open_accounts(self, senders: list[ActorId]) -> None:
        router = self.router()
        for sender in senders:
            await router.invoke(sender, "deposit", DEPOSIT, key=f"open-{_name(sender)}")
        router.close()
        self.senders = senders

    async def transfers(
        self,
        sender: ActorId,
        targets: list[ActorId],
        more: Callable[[int], bool],
        pause: float = 0.0,
    ) -> None:
        """Transfers from ``sender``, one at a time, while ``more(transfers so far)``."""
        router = self.router()
        n = 0
        while more(n):
            n += 1
            target = self.rng.choice(targets)
            seq = self.sent[(sender, target)] = self.sent.get((sender, target), 0) + 1
            amount = 1 + n % 7
            payload = {"to": [target.namespace, target.id], "amount": amount, "seq": seq}
            _, via = await router.invoke(sender, "transfer", payload, key=f"{_name(sender)}>{n}")
            self.acked.append((sender, target, time.monotonic()))
            self.moved[sender] -= amount
            self.moved[target] += amount
            self.sent_via[via] += 1
            if pause:
                await asyncio.sleep(pause)
        router.close()

    def expected(self) -> dict[ActorId, dict[str, list[int]]]:
        want: dict[ActorId, dict[str, list[int]]] = {}
        for (sender, target), count in self.sent.items():
            want.setdefault(target, {})[_name(sender)] = list(range(1, count + 1))
        return want

    async def settled(self, within: float) -> tuple[dict[ActorId, dict[str, Any]], float]:
        """Wait until every message is applied and every outbox is empty; the states."""
        actors = sorted(set(self.expected()) | set(self.senders))
        total = sum(self.sent.values())
        started = time.monotonic()
        async with open_storage(self.url) as storage:
            while True:
                applied, left = -1, -1
                try:
                    states = {actor: await read_teller(storage, actor) for actor in actors}
                    applied = sum(
                        len(seqs) for s in states.values() for seqs in s["received"].values()
                    )
                    left = sum(
                        [len(await storage.list_keys(s, records.OUTBOX)) for s in self.senders]
                    )
                    if applied >= total and left == 0:
                        return states, time.monotonic() - started
                except StorageError as exc:
                    self.events[f"check: {type(exc).__name__}"] += 1
                if time.monotonic() - started > within:
                    raise AssertionError(
                        f"not settled in {within} s: {applied} of {total} messages applied, "
                        f"{left} outbox entries left"
                    )
                await asyncio.sleep(0.2)

    def check(self, states: dict[ActorId, dict[str, Any]]) -> None:
        """Exactly once, in send order per (sender, target); money conserved."""
        want = self.expected()
        for actor, state in sorted(states.items()):
            assert state["received"] == want.get(actor, {}), f"{actor} applied {state['received']}"
            opening = DEPOSIT if actor in self.senders else 0
            assert state["balance"] == opening + self.moved[actor], actor
        assert sum(state["balance"] for state in states.values()) == DEPOSIT * len(self.senders)


def _seeded() -> random.Random:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    return random.Random(seed)


async def test_transfers_between_nodes_and_masters_arrive_once_in_send_order(
    redis_cluster: RedisCluster, store_url: str
) -> None:
    rng = _seeded()
    slots = Slots(redis_cluster)
    banks, vaults = slots.actors_on("bank", "s"), slots.actors_on("vault", "t")
    # Two senders per master; each sends to a vault on every master, to itself and
    # to a sender of the next master (across namespaces, slots and masters).
    senders = [actor for port in slots.masters for actor in banks[port][:2]]
    vault_targets = [vaults[port][0] for port in slots.masters]
    targets = {
        sender: [*vault_targets, sender, senders[(i + 2) % len(senders)]]
        for i, sender in enumerate(senders)
    }
    with start_bank_nodes(store_url, 3, lease_seconds=LEASE_SECONDS, cwd=ROOT) as nodes:
        bank = Bank(store_url, nodes, rng)
        await bank.open_accounts(senders)
        started = time.monotonic()
        await asyncio.gather(*(bank.transfers(s, targets[s], lambda n: n < 25) for s in senders))
        sending = time.monotonic() - started
        states, settling = await bank.settled(within=60)
    bank.check(states)
    pairs = Counter(
        "same master" if slots.master_of(s) == slots.master_of(t) else "across masters"
        for s, t, _ in bank.acked
    )
    crossed = sum(state["crossed"] for state in states.values())
    applied_by: Counter[str] = Counter()
    for state in states.values():
        applied_by.update(state["applied_by"])
    print(
        f"{len(bank.acked)} transfers from {len(senders)} senders on {len(slots.masters)} "
        f"masters in {sending:.2f} s (acknowledged by {dict(bank.sent_via)}); all applied "
        f"{settling:.2f} s later; messages {dict(pairs)}; applied per node "
        f"{dict(applied_by)}, {crossed} on another node than their sender's; "
        f"client events {dict(bank.events)}"
    )
    assert pairs["across masters"] > 0 and pairs["same master"] > 0
    assert crossed > 0  # delivered by another runtime process than the sending one
    assert len(applied_by) >= 2


def _buckets(fires: list[dict[str, Any]], armed: float, every: float) -> list[int]:
    """The period each fire of a repeating reminder fell in, counted from its first due time.

    A repeating reminder's next due time is past its fire, so fires of different
    due times fall in different periods; two fires in one period mean one due
    time fired twice. (``armed``, the setting handler's clock, is a fraction of
    a millisecond before the stored due time: only a fire landing in that
    sliver before a due time could be miscounted.)
    """
    return [math.floor((fire["at"] - armed) / every) for fire in fires]


async def test_reminders_and_messages_in_flight_survive_a_master_failover_once(
    fresh_cluster: RedisCluster,
) -> None:
    rng = _seeded()
    cluster = fresh_cluster
    url = f"{cluster.url}?prefix=mf-{uuid.uuid4().hex[:8]}&wait_replicas=1&wait_timeout_ms=1000"
    slots = Slots(cluster)
    victim = slots.masters[0]
    others = slots.masters[1:]
    banks, vaults = slots.actors_on("bank", "s"), slots.actors_on("vault", "t")
    # Reminder actors on the victim, those whose index shard is there too first.
    reminded = sorted(
        slots.actors_on("vault", "r")[victim],
        key=lambda actor: slots.master_of(records.index_actor(actor)) != victim,
    )[:4]
    senders = banks[victim][:2] + [banks[port][0] for port in others]
    vault_targets = [*vaults[victim][:2], vaults[others[0]][0]]
    targets = {
        sender: [*vault_targets, sender, senders[(i + 2) % len(senders)]]
        for i, sender in enumerate(senders)
    }
    # (actor index, name) -> after (s); the kill comes 1.5 s after they are set.
    one_shots = {
        (0, "due-in-outage"): 3.0,
        (1, "due-in-outage-2"): 4.5,
        (0, "due-after"): 9.0,
        (1, "due-later"): 12.0,
        (3, "re-armed"): 5.0,  # first set for 1.0 s: its first due time must never fire
    }
    cancelled = {(3, "cancelled-before-kill"): 5.0, (1, "cancelled-too"): 2.0}
    beat, every = reminded[2], 1.0
    recovered = asyncio.Event()

    with start_bank_nodes(url, 3, lease_seconds=LEASE_SECONDS, cwd=ROOT) as nodes:
        bank = Bank(url, nodes, rng)
        router = bank.router()
        await bank.open_accounts(senders)
        set_at = time.monotonic()
        await router.invoke(reminded[3], "remind", {"name": "re-armed", "after": 1.0})
        for (i, name), after in {**one_shots, **cancelled}.items():
            payload = {"name": name, "after": after}
            await router.invoke(reminded[i], "remind", payload, key=f"set-{name}")
        payload = {"name": "beat", "after": 0.5, "every": every}
        await router.invoke(beat, "remind", payload, key="set-beat")
        for i, name in cancelled:  # acknowledged (WAIT-confirmed) before the kill
            await router.invoke(reminded[i], "cancel", name, key=f"cancel-{name}")

        after_recovery: Counter[ActorId] = Counter()

        def more(sender: ActorId) -> Callable[[int], bool]:
            def go_on(n: int) -> bool:
                if recovered.is_set():
                    after_recovery[sender] += 1
                return after_recovery[sender] <= 10

            return go_on

        workers = [
            asyncio.create_task(bank.transfers(s, targets[s], more(s), pause=0.05)) for s in senders
        ]
        await asyncio.sleep(max(0.0, set_at + 1.5 - time.monotonic()))
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, victim)
        promoted = await asyncio.to_thread(cluster.wait_for_failover, victim)
        promoted_at = time.monotonic()
        # wait_replicas=1: the promoted master confirms nothing until it has a replica again.
        await asyncio.to_thread(cluster.restart, victim)
        recovered_at = time.monotonic()
        recovered.set()
        await asyncio.gather(*workers)
        states, settling = await bank.settled(within=90)

        async def fired_by_now(names: list[str]) -> dict[str, list[dict[str, Any]]]:
            """Reminder name -> its fires, once each of ``names`` fired (or 60 s passed)."""
            async with open_storage(url) as storage:
                while True:
                    fires: dict[str, list[dict[str, Any]]] = {}
                    try:
                        for actor in reminded:
                            state = await read_teller(storage, actor)
                            for fire in state["fired"]:
                                fires.setdefault(fire["name"], []).append(fire)
                            armed.update(state["armed"])
                    except StorageError:
                        fires = {}
                    if all(name in fires for name in names):
                        return fires
                    if time.monotonic() - set_at > 60:
                        raise AssertionError(f"reminders fired by now: {sorted(fires)}")
                    await asyncio.sleep(0.2)

        armed: dict[str, float] = {}
        await fired_by_now([name for _, name in one_shots])
        await router.invoke(beat, "cancel", "beat", key="cancel-beat")
        beat_cancelled_at = time.monotonic()
        await asyncio.sleep(2.5 * every)  # no fire after the cancel returned
        fires = await fired_by_now([name for _, name in one_shots])
        router.close()

    bank.check(states)
    in_flight = sum(
        1
        for sender, target, at in bank.acked
        if killed_at <= at <= recovered_at and slots.master_of(target) == victim
    )
    beats = fires.get("beat", [])
    figures = {
        name: f"due {armed[name] - killed_at:+.2f} s, fired {fire['at'] - killed_at:+.2f} s "
        f"by {fire['node']}"
        for name, found in sorted(fires.items())
        if name != "beat"
        for fire in found
    }
    before_kill = sum(1 for *_, at in bank.acked if at < killed_at)
    indexed_on_victim = sum(slots.master_of(records.index_actor(a)) == victim for a in reminded)
    print(
        f"{indexed_on_victim} of the {len(reminded)} reminded actors have their index shard "
        f"on the victim too; killed master :{victim} after {before_kill} transfers; "
        f":{promoted} promoted {promoted_at - killed_at:.2f} s and the old master "
        f"back as its replica {recovered_at - killed_at:.2f} s after the kill; "
        f"{len(bank.acked)} transfers, {in_flight} of them to the victim's actors acknowledged "
        f"during the outage; all applied {settling:.2f} s after the last; client events "
        f"{dict(bank.events)}; reminders (times from the kill): {figures}; 'beat' (every "
        f"{every} s) fired by {dict(Counter(f['node'] for f in beats))} at "
        f"{[round(f['at'] - killed_at, 2) for f in beats]}"
    )
    for _, name in one_shots:  # once per due time, not early, by exactly one node
        assert len(fires[name]) == 1, fires[name]
        assert fires[name][0]["at"] >= armed[name]
        if armed[name] > killed_at:  # due after the kill: fired by the promoted replica's data
            assert fires[name][0]["at"] > promoted_at
    for _, name in cancelled:
        assert name not in fires
    buckets = _buckets(beats, armed["beat"], every)
    assert buckets == sorted(set(buckets)), buckets  # never two fires for one due time
    assert any(fire["at"] > promoted_at for fire in beats)
    assert all(fire["at"] < beat_cancelled_at for fire in beats)
    assert in_flight > 0  # messages committed while their target's shard was down


async def _cancel_on_a_lagging_master(
    cluster: RedisCluster, slots: Slots, master: int, wait_replicas: int
) -> tuple[str, list[float], float]:
    """Set a reminder, cancel it while only ``master`` can take the cancel, fail over.

    The replica is paused and its link cut (as in ``test_failover.py``), so a
    cancel the master acknowledges exists nowhere else; the master is killed
    and the stale replica promoted. Returns how the cancel ended, the fire
    times (monotonic) and when a cancel was acknowledged (the first, or a retry).
    """
    url = (
        f"{cluster.url}?prefix=lc-{uuid.uuid4().hex[:8]}"
        f"&wait_replicas={wait_replicas}&wait_timeout_ms=150"
    )
    replica = next(p for p in cluster.replicas_of(master) if cluster.node(p).running)
    actor = slots.actors_on("vault", "c")[master][0]
    storage = open_storage(url, connect_timeout=0.5)
    cancelled_at: float | None = None
    async with asyncio.timeout(120), Runtime(storage, invocation_timeout=10) as runtime:
        for namespace in NAMESPACES:
            runtime.register(namespace, Teller)
        due_at = time.monotonic() + DUE
        for attempt in range(20):  # the index shard may sit on a master still resyncing a
            try:  # replica after the previous round's failover: its WAIT can time out
                await runtime.invoke(
                    actor, "remind", {"name": "r", "after": DUE}, idempotency_key="set"
                )
                break
            except (CommitOutcomeUnknownError, StorageUnavailableError):
                if attempt == 19:  # unavailable: a read not confirmed in time, nothing written
                    raise
                await asyncio.sleep(0.25)  # the same key: a retry that landed replays
        await asyncio.to_thread(wait_replicated, cluster, master, replica)
        cluster.node(replica).pause()
        assert cluster_command(master, "CLIENT", "KILL", "TYPE", "replica") == "1"
        try:
            await runtime.invoke(actor, "cancel", "r", idempotency_key="cancel")
            cancel, cancelled_at = "acknowledged", time.monotonic()
        except (StorageUnavailableError, CommitOutcomeUnknownError) as exc:
            cancel = type(exc).__name__
        await asyncio.to_thread(cluster.kill, master)
        cluster.node(replica).resume()
        await asyncio.to_thread(cluster.wait_for_failover, master)
        if wait_replicas:  # the promoted master confirms nothing until it has a replica
            await asyncio.to_thread(cluster.restart, master)
        while cancelled_at is None:  # the caller was told it may not have landed: again
            try:
                await runtime.invoke(actor, "cancel", "r", idempotency_key="cancel-again")
                cancelled_at = time.monotonic()
            except RETRYABLE:
                await asyncio.sleep(0.05)
        # Sweeps run every second while the index holds entries: a fire, or a second
        # one, comes within this -- counted from the failover too: on a loaded machine
        # it can end after the due time, and the sweeps only then reach the new master.
        watch_from = max(due_at, cancelled_at, time.monotonic())
        state = await read_teller(storage, actor)
        if not wait_replicas:  # the cancel is lost: wait for the fire, then for a second one
            while not state["fired"] and time.monotonic() < watch_from + 4 * WATCH:
                await asyncio.sleep(0.2)
                with contextlib.suppress(*RETRYABLE):  # the client may still be refreshing
                    state = await read_teller(storage, actor)
            watch_from = max(watch_from, time.monotonic())
        await asyncio.sleep(max(0.0, watch_from + WATCH - time.monotonic()))
        state = await read_teller(storage, actor)
    await storage.close()
    return cancel, [fire["at"] for fire in state["fired"]], cancelled_at


async def test_a_cancel_only_a_lagging_master_had_is_lost_without_wait_and_refused_with_it(
    fresh_cluster: RedisCluster,
) -> None:
    """What docs/scale-out.md §4 promises for reminders: WAIT or a possible loss."""
    slots = Slots(fresh_cluster)
    figures: list[tuple[str, list[float], float]] = []
    for wait_replicas, master in zip((0, 1), slots.masters[:2], strict=True):
        cancel, fired, cancelled_at = await _cancel_on_a_lagging_master(
            fresh_cluster, slots, master, wait_replicas
        )
        figures.append((cancel, fired, cancelled_at))
        print(
            f"wait_replicas={wait_replicas}: master :{master} killed; the first cancel: "
            f"{cancel}; the reminder fired at {[round(at - cancelled_at, 2) for at in fired]} "
            f"s from the acknowledged cancel"
        )
    (lost_cancel, lost_fired, _), (refused, fired, cancelled_at) = figures
    # Without WAIT the master acknowledged the cancel and the failover lost it: the
    # reminder fires once (a documented loss of an acknowledged commit).
    assert lost_cancel == "acknowledged"
    assert len(lost_fired) == 1
    # With wait_replicas=1 the cancel is refused, never acknowledged and lost; once a
    # cancel is acknowledged (after recovery) nothing fires any more.
    assert refused == "StorageUnavailableError"
    assert all(at < cancelled_at for at in fired)
