"""Reusable invariant checks and the client-side model they compare against.

The checks never ask the runtime under test how things went: they compare what
clients saw (``OperationLog``: every operation issued, and whether it was
acknowledged, rejected or given up on) with what storage holds (read through
``Simulation.state``/``kv``, behind the runtime's back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kelpie.dst.harness import Simulation
from kelpie.identity import ActorId

__all__ = ["OpRecord", "OperationLog", "kv_matches_state", "parse_int"]


def parse_int(raw: bytes | None) -> int | None:
    """An ASCII integer stored as bytes, or ``None``."""
    return None if raw is None else int(raw.decode("ascii"))


async def kv_matches_state(
    sim: Simulation,
    actor: ActorId,
    state_value: int | None,
    kv_key: bytes,
    *,
    report: bool = True,
) -> bool:
    """Check that the KV copy of a number equals the state's; report a violation if not.

    An actor that never committed has neither (``None`` and ``None``); a KV
    value without state, or state without its KV copy, is a violation too.
    ``report=False`` only answers (to re-read before reporting: the state and
    the KV are two reads, and a late commit may land between them).
    """
    kv_value = parse_int(await sim.kv(actor, kv_key))
    if state_value == kv_value or (kv_value is None and state_value in (None, 0)):
        return True
    if not report:
        return False
    sim.violation(
        f"{actor}: KV {kv_key.decode(errors='replace')}={kv_value} but state={state_value} "
        f"at t={sim.now:.6f}"
    )
    return False


Status = Literal["issued", "ok", "rejected", "gave_up"]


@dataclass
class OpRecord:
    """One client operation: where it applies, by how much, and what the client saw."""

    op_id: str
    actor: ActorId
    delta: int
    kind: str = "external"
    status: Status = "issued"


@dataclass
class OperationLog:
    """The clients' view: every operation issued and its final outcome."""

    ops: dict[str, OpRecord] = field(default_factory=dict)

    def issue(self, op_id: str, actor: ActorId, delta: int, kind: str = "external") -> OpRecord:
        if op_id in self.ops:
            raise ValueError(f"operation id {op_id!r} issued twice")
        record = self.ops[op_id] = OpRecord(op_id, actor, delta, kind)
        return record

    def verify_applied(
        self, sim: Simulation, actor: ActorId, applied: dict[str, tuple[int, int]]
    ) -> None:
        """Compare one actor's applied-operation records with the log.

        ``applied`` maps op id -> (times applied, delta) as stored by the actor.
        Every applied op was issued for this actor with this delta (no phantom),
        applied exactly once; every acknowledged op of the actor is there
        (nothing acknowledged lost) and no rejected one is.
        """
        for op_id, (count, delta) in sorted(applied.items()):
            record = self.ops.get(op_id)
            if record is None or record.actor != actor:
                sim.violation(f"{actor}: applied operation {op_id} was never issued for it")
                continue
            if count != 1:
                sim.violation(f"{actor}: operation {op_id} applied {count} times (exactly once)")
            if delta != record.delta:
                sim.violation(f"{actor}: operation {op_id} applied {delta}, issued {record.delta}")
            if record.status == "rejected":
                sim.violation(f"{actor}: operation {op_id} was rejected but is applied")
        for record in self.ops.values():
            if record.actor == actor and record.status == "ok" and record.op_id not in applied:
                sim.violation(f"{actor}: acknowledged operation {record.op_id} was lost")
