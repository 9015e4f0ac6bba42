"""Messaging on a Redis Cluster with ``wait_replicas=1``: the sweep delivers only what a
replica confirmed.

A sending commit whose ``WAIT`` timed out (``CommitOutcomeUnknownError``: on
the master only) must not be delivered by the background sweep before a
failover can decide it: if the failover loses the commit, a delivered credit
would create money, and the sender's counter -- gone back with the commit --
would give its next message a sequence number the target had already seen
(the message dropped as a duplicate). The sweep reads outboxes (and another
node's delivery marks) in transactions, whose first read ``WAIT``-confirms.
Found by a reproduction script while writing test_messaging_on_cluster.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from kelpie import ActorId, Runtime, open_storage
from kelpie.actor.context import ActorContext
from kelpie.errors import CommitOutcomeUnknownError, StorageError
from kelpie.messaging import records
from kelpie.storage.redis.keys import actor_keys
from kelpie.testing.bank_node import Teller, Till, read_teller
from kelpie.testing.redis_cluster import RedisCluster, cluster_command, key_slot, wait_replicated

T = TypeVar("T")

_entered: asyncio.Event
_gate: asyncio.Event


class HeldTeller(Teller):
    async def held_transfer(self, ctx: ActorContext[Till], payload: dict[str, Any]) -> int:
        _entered.set()
        await _gate.wait()  # the transaction's first read (WAIT-confirmed) is done
        return await self.transfer(ctx, payload)


def _master_of(cluster: RedisCluster, actor: ActorId) -> int:
    return cluster.master_of_slot(key_slot(actor_keys("x", actor).version))


async def _until_ok(call: Callable[[], Awaitable[T]]) -> T:
    for _ in range(600):
        try:
            return await call()
        except StorageError:
            await asyncio.sleep(0.1)
    raise AssertionError("the cluster stayed unavailable for a minute")


async def test_an_unconfirmed_send_is_not_delivered_before_a_failover_decides_it(
    fresh_cluster: RedisCluster,
) -> None:
    global _entered, _gate
    _entered, _gate = asyncio.Event(), asyncio.Event()
    cluster = fresh_cluster
    master = cluster.masters()[0]
    replica = cluster.replicas_of(master)[0]
    sender = next(
        a
        for a in (ActorId("bank", f"s{i}") for i in range(500))
        if _master_of(cluster, a) == master
        and _master_of(cluster, records.index_actor(a)) != master
    )
    target = next(
        a
        for a in (ActorId("vault", f"t{i}") for i in range(500))
        if _master_of(cluster, a) != master
    )
    print(f"sender {sender} on master :{master} (replica :{replica}); target {target} elsewhere")
    url = f"{cluster.url}?prefix=confirmed&wait_replicas=1&wait_timeout_ms=150"
    storage = open_storage(url, connect_timeout=0.5)
    try:
        async with Runtime(storage, invocation_timeout=30) as runtime:
            runtime.register("bank", HeldTeller)
            runtime.register("vault", HeldTeller)
            # A loaded machine may miss the 150 ms WAIT: the key makes a retry safe.
            await _until_ok(lambda: runtime.invoke(sender, "deposit", 100, idempotency_key="open"))
            await asyncio.to_thread(wait_replicated, cluster, master, replica)

            payload = {"to": ["vault", target.id], "amount": 30, "seq": 1}
            task = asyncio.create_task(runtime.invoke(sender, "held_transfer", payload))
            await _entered.wait()
            cluster.node(replica).pause()  # the replica stops confirming ...
            assert cluster_command(master, "CLIENT", "KILL", "TYPE", "replica") == "1"
            _gate.set()  # ... and the sender commits on its master only
            with pytest.raises(CommitOutcomeUnknownError):
                await task

            # Sweeps run meanwhile (about one a second): none may deliver the
            # unconfirmed message.
            for _ in range(80):
                assert (await read_teller(storage, target))["balance"] == 0
                await asyncio.sleep(0.1)

            await asyncio.to_thread(cluster.kill, master)
            cluster.node(replica).resume()
            await asyncio.to_thread(cluster.wait_for_failover, master)
            await asyncio.to_thread(cluster.restart, master)
            after = await _until_ok(lambda: read_teller(storage, sender))
            assert after["balance"] == 100  # the failover lost the debit: nothing was sent

            # The sender's next message (sequence 1 again) is applied, once.
            payload = {"to": ["vault", target.id], "amount": 5, "seq": 2}
            await _until_ok(
                lambda: runtime.invoke(sender, "transfer", payload, idempotency_key="t2")
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                credited = await read_teller(storage, target)
                if credited["balance"]:
                    break
                await asyncio.sleep(0.1)
            debited = await read_teller(storage, sender)
            print(f"sender {debited['balance']}, target {credited['balance']}")
            assert (debited["balance"], credited["balance"]) == (95, 5)
            assert debited["balance"] + credited["balance"] == 100  # no money made
    finally:
        await storage.close()
