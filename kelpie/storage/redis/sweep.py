"""``list_actors`` on Redis Cluster: every hash slot's actor index, merged in ``ActorId`` order.

A commit can only touch keys of its actor's hash slot, so each slot keeps
its own actor index (ADR 0014). Listing merges the 16,384 indexes of every
master: a ``Sweep`` fetches a few members of each slot after ``after`` (one
request per master, all masters at once), then emits members in order up to
the *frontier*, the smallest last-fetched member of any slot that may hold
more: below it every slot's members are known. When the frontier stops a
page, the slots whose buffers ran low are fetched again, twice as many each
time.

A listing of ``N`` actors in pages costs about one pass over the slots plus
the members, not a pass per page: the storage keeps the last page's sweep
and continues it when the next call's ``after`` is the last actor it
returned, for at most ``SWEEP_TTL`` seconds (loop time) and only while this
storage deleted and committed nothing. What a sweep buffered was fetched
during the listing, so an actor that exists throughout a listing is in it
and no actor is returned twice; one created or deleted meanwhile by another
process may or may not be.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.asyncio.connection import ConnectionPool

from kelpie.identity import ActorId
from kelpie.storage.redis.actors import decode_members, ensure_index, node_commands
from kelpie.storage.redis.keys import SLOTS, list_range, store_key

if TYPE_CHECKING:
    from kelpie.storage.redis.cluster import RedisClusterStorage

__all__ = ["SWEEP_TTL", "Sweep", "list_on_cluster"]

SWEEP_TTL = 2.0
"""Seconds (loop time) a listing's next page may continue the previous page's sweep."""

_MAX_FETCH = 4096


@dataclass
class Sweep:
    """A merge of every slot's index, page after page (see the module docstring)."""

    namespace: str | None
    position: ActorId | None
    generation: int
    started: float
    high: bytes = b"+"
    low: bytes = b"-"
    buffers: list[deque[bytes]] = field(default_factory=list)
    last: list[bytes | None] = field(default_factory=list)
    """Per slot: the last member fetched (``None``: nothing fetched yet)."""
    done: list[bool] = field(default_factory=list)
    """Per slot: every member up to ``high`` is fetched."""
    want: list[int] = field(default_factory=list)
    heap: list[tuple[bytes, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.low, self.high = list_range(self.namespace, self.position)
        self.buffers = [deque() for _ in range(SLOTS)]
        self.last = [None] * SLOTS
        self.done = [False] * SLOTS
        self.want = [0] * SLOTS

    def frontier(self) -> bytes | None:
        """Members up to this one are known in every slot (``None``: all are known)."""
        pending = [last for last, done in zip(self.last, self.done, strict=True) if not done]
        if not pending:
            return None
        if any(last is None for last in pending):
            return b""
        return min(last for last in pending if last is not None)

    def take(self, limit: int) -> list[bytes]:
        """Up to ``limit`` members in order, none past the frontier."""
        frontier = self.frontier()
        out: list[bytes] = []
        heap, buffers = self.heap, self.buffers
        while heap and len(out) < limit:
            member, slot = heap[0]
            if frontier is not None and member > frontier:
                break
            buffer = buffers[slot]
            buffer.popleft()
            out.append(member)
            if buffer:
                heapq.heapreplace(heap, (buffer[0], slot))
            else:
                heapq.heappop(heap)
        return out

    def to_fetch(self, first: int) -> list[int]:
        """Slots to fetch next: never fetched, or not done and running low."""
        slots = []
        for slot in range(SLOTS):
            if self.done[slot]:
                continue
            want = self.want[slot]
            if want == 0:
                self.want[slot] = first
                slots.append(slot)
            elif len(self.buffers[slot]) < max(1, want // 2):
                self.want[slot] = min(_MAX_FETCH, want * 2)
                slots.append(slot)
        return slots

    def add(self, slot: int, members: list[bytes]) -> None:
        """Record a fetch of ``slot`` that asked for ``self.want[slot]`` members."""
        if len(members) < self.want[slot]:
            self.done[slot] = True
        if not members:
            return
        buffer = self.buffers[slot]
        if not buffer:
            heapq.heappush(self.heap, (members[0], slot))
        buffer.extend(members)
        self.last[slot] = members[-1]


async def list_on_cluster(
    storage: RedisClusterStorage, namespace: str | None, after: ActorId | None, limit: int
) -> list[ActorId]:
    """``list_actors`` on Redis Cluster (see the module docstring)."""
    await ensure_index(storage)
    now = asyncio.get_running_loop().time()
    sweep = storage._sweep
    if (
        sweep is None
        or sweep.namespace != namespace
        or sweep.position != after
        or sweep.generation != storage._generation
        or now - sweep.started > SWEEP_TTL
    ):
        sweep = Sweep(namespace, after, storage._generation, now)
    storage._sweep = None  # a failed page leaves no half-updated sweep behind
    first = max(8, min(limit, -(-4 * limit // SLOTS)))
    members: list[bytes] = []
    while len(members) < limit:
        members += sweep.take(limit - len(members))
        if len(members) >= limit:
            break
        slots = sweep.to_fetch(first)
        if not slots:  # every slot is done and every member taken
            break
        await _fetch(storage, sweep, slots)
    actors = decode_members(storage, members)
    if actors:
        sweep.position = actors[-1]
    storage._sweep = sweep
    return actors


async def _fetch(storage: RedisClusterStorage, sweep: Sweep, slots: list[int]) -> None:
    """Fetch the next members of ``slots``: one request per master, all masters at once."""
    by_node: dict[object, tuple[ConnectionPool, list[int]]] = {}
    for slot in slots:
        node, pool = await storage._route_slot(slot)
        by_node.setdefault(node, (pool, []))[1].append(slot)
    prefix = storage.prefix

    async def one(node: object, pool: ConnectionPool, group: list[int]) -> None:
        commands = []
        for slot in group:
            last = sweep.last[slot]
            low = sweep.low if last is None else b"(" + last
            index = store_key(prefix, slot, b"a")
            count = b"%d" % sweep.want[slot]
            commands.append((b"ZRANGEBYLEX", index, low, sweep.high, b"LIMIT", b"0", count))
        replies = await node_commands(storage, node, pool, commands, "listing actors")
        for slot, reply in zip(group, replies, strict=True):
            sweep.add(slot, [bytes(member) for member in reply])

    await asyncio.gather(*(one(node, pool, group) for node, (pool, group) in by_node.items()))
