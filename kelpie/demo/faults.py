"""The demo's faults: which ones strike is a function of the seed, not of timing.

One shared random stream would hand its draws to storage operations in the
order they happen to reach it, and with several operations in flight on a
real backend (LMDB commits on worker threads, Redis replies) that order
changes from run to run: the same seed gave 70 faults, then 69. Here every
actor draws from its own stream, seeded by the demo's seed and the actor's
id, and the demo runs the operations of one account in the order they were
generated (``kelpie.demo.command``): each actor sees the same storage
operations in the same order in every run with that seed, so the same faults
strike the same operations.
"""

from __future__ import annotations

import random
from collections import Counter

from kelpie.dst.faults import FaultInjector, FaultKind, FaultPlan
from kelpie.identity import ActorId

__all__ = ["SeededFaults"]


class SeededFaults(FaultInjector):
    """A ``FaultInjector`` drawing from one random stream per actor, derived from ``seed``."""

    def __init__(self, plan: FaultPlan, seed: str) -> None:
        super().__init__(plan, random.Random(seed))
        self.seed = seed
        self._streams: dict[ActorId, random.Random] = {}
        self.struck: Counter[tuple[str, str, str]] = Counter()
        """How often each fault struck each (actor, operation): ``(actor, op, kind)``."""

    def _stream(self, actor: ActorId) -> None:
        rng = self._streams.get(actor)
        if rng is None:
            rng = self._streams[actor] = random.Random(f"{self.seed}/{actor.namespace}/{actor.id}")
        self.rng = rng

    def latency(self, op: str, actor: ActorId) -> float:
        self._stream(actor)
        return super().latency(op, actor)

    def check(self, op: str, actor: ActorId) -> None:
        self._stream(actor)
        super().check(op, actor)

    def commit_fault(self, op: str, actor: ActorId, *, read: bool, wrote: bool) -> FaultKind | None:
        self._stream(actor)
        return super().commit_fault(op, actor, read=read, wrote=wrote)

    def _note(self, kind: FaultKind, op: str, actor: ActorId) -> None:
        self.struck[(str(actor), op, str(kind))] += 1
        super()._note(kind, op, actor)
