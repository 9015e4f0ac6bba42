"""Three runtime processes with node ids on one store: routing, crash, zombie.

Clients invoke random accounts through any node, follow
``ActorActiveElsewhereError.owner`` to the owner, and retry with the same
idempotency key on anything uncertain. Afterwards every account's ledger is
read straight from the store: state and KV journal agree, every acknowledged
invocation is there exactly once.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable

from kelpie import ActorId, open_storage
from kelpie.errors import (
    ActorActiveElsewhereError,
    CommitOutcomeUnknownError,
    KelpieError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.testing.runtime_node import NodeClient, ledger_violations
from tests.scale_out.conftest import LEASE_SECONDS, Node

Acked = dict[ActorId, dict[str, int]]


class Router:
    """A client that may enter through any node and follows lease owners."""

    def __init__(self, nodes: dict[str, Node], rng: random.Random) -> None:
        self.nodes = nodes
        self.rng = rng
        self.clients = {node_id: NodeClient(node.port) for node_id, node in nodes.items()}
        self.events: Counter[str] = Counter()
        self.down: set[str] = set()

    def _any(self, avoid: str | None = None) -> str:
        choices = [n for n in sorted(self.nodes) if n not in self.down and n != avoid]
        return self.rng.choice(choices or sorted(self.nodes))

    async def apply(self, actor: ActorId, txn: str, amount: int) -> str:
        """Apply until acknowledged; return the node id that acknowledged it."""
        target = self._any()
        payload = {"txn": txn, "amount": amount}
        while True:
            try:
                async with asyncio.timeout(2 * LEASE_SECONDS):
                    await self.clients[target].invoke(actor, "apply", payload, key=txn)
                return target
            except ActorActiveElsewhereError as exc:
                self.events["redirected"] += 1
                if exc.owner in self.nodes and exc.owner not in self.down:
                    target = exc.owner
                    continue
                target = self._any(avoid=target)  # owner unknown/dead: wait out its lease
            except (OSError, TimeoutError):
                self.events["node unreachable"] += 1
                target = self._any(avoid=target)
            except (StorageUnavailableError, CommitOutcomeUnknownError, TransactionConflictError):
                self.events["retried"] += 1
            await asyncio.sleep(0.05)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


async def _check(url: str, acked: Acked, rejected: Acked | None = None) -> None:
    async with open_storage(url) as storage:
        for actor in sorted(acked):
            problems, lost = await ledger_violations(storage, actor, acked[actor])
            assert problems == []
            assert lost == []
            for txn in (rejected or {}).get(actor, {}):
                _, missing = await ledger_violations(storage, actor, {txn: 0})
                assert missing == [txn], f"a refused late commit {txn} landed on {actor}"


async def _workload(
    router: Router, actors: list[ActorId], acked: Acked, count: int, workers: int = 6
) -> Counter[str]:
    served: Counter[str] = Counter()
    remaining = [count]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            actor = router.rng.choice(actors)
            txn, amount = uuid.uuid4().hex, router.rng.randint(1, 9)
            served[await router.apply(actor, txn, amount)] += 1
            acked[actor][txn] = amount

    await asyncio.gather(*(worker() for _ in range(workers)))
    return served


def _seeded() -> random.Random:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    return random.Random(seed)


async def test_three_processes_share_a_store_and_keep_the_ledger(
    start_nodes: Callable[[int], dict[str, Node]], store_url: str
) -> None:
    nodes = start_nodes(3)
    router = Router(nodes, _seeded())
    actors = [ActorId("account", f"a{i}") for i in range(30)]
    acked: Acked = {actor: {} for actor in actors}
    served = await _workload(router, actors, acked, 400)
    router.close()
    print(f"served per node {dict(served)}; {dict(router.events)}")
    assert sum(served.values()) == 400
    assert len([n for n in served if served[n] > 0]) == 3
    assert router.events["redirected"] > 0
    await _check(store_url, acked)


async def test_a_killed_process_has_its_actors_served_elsewhere(
    start_nodes: Callable[[int], dict[str, Node]], store_url: str
) -> None:
    nodes = start_nodes(3)
    router = Router(nodes, _seeded())
    owned = [ActorId("account", f"k{i}") for i in range(10)]
    acked: Acked = {actor: {} for actor in owned}
    n1 = router.clients["n1"]
    for i, actor in enumerate(owned):  # n1 holds every lease
        await n1.invoke(actor, "apply", {"txn": f"first-{i}", "amount": 5}, key=f"first-{i}")
        acked[actor][f"first-{i}"] = 5

    nodes["n1"].kill()
    killed = time.monotonic()
    takeover: list[float] = []

    async def take_over(i: int, actor: ActorId) -> None:
        router_i = Router(nodes, random.Random(i))  # a client of its own per actor
        router_i.down.add("n1")
        served_by = await router_i.apply(actor, f"after-{i}", 7)
        router_i.close()
        assert served_by in ("n2", "n3")
        takeover.append(time.monotonic() - killed)
        acked[actor][f"after-{i}"] = 7

    await asyncio.gather(*(take_over(i, actor) for i, actor in enumerate(owned)))
    router.close()
    takeover.sort()
    print(
        f"lease {LEASE_SECONDS} s: first actor served elsewhere {takeover[0]:.2f} s after "
        f"SIGKILL, all 10 by {takeover[-1]:.2f} s"
    )
    await _check(store_url, acked)


async def test_a_paused_process_resumes_as_a_zombie_and_commits_nothing(
    start_nodes: Callable[[int], dict[str, Node]], store_url: str
) -> None:
    nodes = start_nodes(3)
    router = Router(nodes, _seeded())
    owned = [ActorId("account", f"z{i}") for i in range(5)]
    acked: Acked = {actor: {} for actor in owned}
    for i, actor in enumerate(owned):  # n1 holds every lease
        await router.clients["n1"].invoke(
            actor, "apply", {"txn": f"first-{i}", "amount": 5}, key=f"first-{i}"
        )
        acked[actor][f"first-{i}"] = 5

    nodes["n1"].pause()
    # Requests that reach the zombie while it sleeps: it runs them after SIGCONT.
    late: Acked = {actor: {f"late-{i}": 100} for i, actor in enumerate(owned)}
    zombie_clients = [NodeClient(nodes["n1"].port) for _ in owned]

    async def late_call(client: NodeClient, actor: ActorId, txn: str) -> str:
        try:
            async with asyncio.timeout(60):  # a hang guard
                await client.invoke(actor, "apply", {"txn": txn, "amount": 100}, key=txn)
        except KelpieError as exc:
            return type(exc).__name__
        return "committed"

    late_tasks = [
        asyncio.create_task(late_call(client, actor, f"late-{i}"))
        for i, (client, actor) in enumerate(zip(zombie_clients, owned, strict=True))
    ]
    await asyncio.sleep(0.2)  # let the requests reach n1's socket buffers
    router.down.add("n1")
    new_owner: dict[ActorId, str] = {}
    for i, actor in enumerate(owned):  # taken over once the lease expired
        new_owner[actor] = await router.apply(actor, f"taken-{i}", 7)
        acked[actor][f"taken-{i}"] = 7
    nodes["n1"].resume()

    outcomes = await asyncio.gather(*late_tasks)
    probe = NodeClient(nodes["n1"].port)
    owners = []
    for actor in owned:
        try:
            await probe.invoke(actor, "apply", {"txn": "probe", "amount": 1}, key="probe")
        except ActorActiveElsewhereError as exc:
            owners.append(exc.owner)
    for client in [*zombie_clients, probe]:
        client.close()
    router.close()
    print(f"late commits of the resumed zombie: {Counter(outcomes)}; new owners {owners}")
    assert "committed" not in outcomes
    assert owners == [new_owner[actor] for actor in owned]
    await _check(store_url, acked, rejected=late)
