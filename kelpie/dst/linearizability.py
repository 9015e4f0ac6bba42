"""Linearizability checking of recorded histories, one actor (partition) at a time.

Linearizability is compositional (P-compositionality): a history is linearizable
iff every partition's sub-history is, so each actor is checked alone against a
sequential ``Model``. Each partition is searched with the Wing-Gong algorithm
as improved by Lowe (the one Knossos and Porcupine use): the call and return
events are laid out in time order in a doubly linked list; the search walks it
from the head, and at a call event tries to *linearize* that operation — the
model must accept its output in the current state — lifting its two events out
of the list and starting again from the head; reaching a return event whose
operation is not yet linearized means the current order is impossible, so it
backtracks, undoing the last lift and trying the next candidate. Lowe's
memoization records every (set of linearized operations, model state) pair
already explored and never explores one twice, which keeps the search close to
linear for the histories a simulation produces. An operation whose outcome is
unknown (``ret is None``) returns at infinity, accepts any output, and need
not be linearized at all: the search succeeds once every operation with a known
return is. Such an op is tried only when no known candidate fits, and a
configuration is pruned when one with the same state and known ops but fewer
unknown ones was seen. A step budget (model steps) bounds the search; running
out gives ``ok=True`` with ``exhausted=True``, never a false violation.
Refuting a history costs more than confirming one (every order must fail).

On a violation the history is shrunk for reading: first to the shortest failing
*time prefix* (every operation called by time T; those still pending at T
become unknown-outcome, so the prefix is a relaxation of the history and its
failure proves the history's), then by greedily dropping operations while the
slice still fails, still fails with the dropped operation turned into an
unknown-outcome one, and fails no earlier in time (so an operation the failure
depends on, such as the write a read saw, is kept). In the slice an operation
still pending at the failure time shows as unknown.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Final, Protocol

__all__ = [
    "UNKNOWN",
    "Model",
    "Op",
    "Verdict",
    "check_history",
    "check_partition",
]


class _Unknown(enum.Enum):
    UNKNOWN = "UNKNOWN"

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown.UNKNOWN
"""The output of an operation whose outcome is unknown (a singleton)."""


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a history, from the point of view of the client that issued it."""

    id: int  # unique within a history; increasing in call order
    partition: str  # ops of different partitions are checked separately (str(ActorId))
    call: float  # loop time when the client issued it (its first attempt)
    ret: float | None  # when its final answer reached the client; None = unknown outcome:
    # it may have taken effect at any moment after `call`, or never
    input: Hashable  # e.g. ("apply", "c1.3", 5)
    output: Hashable  # the result, or ("error", "ExcName"); UNKNOWN when ret is None
    client: int = -1  # for rendering only


class Model(Protocol):
    """A sequential specification of one partition (one actor)."""

    def init(self) -> Hashable:
        """The initial state."""
        ...

    def step(self, state: Hashable, input: Hashable, output: Hashable) -> Hashable | None:
        """The next state if `output` is what `input` returns in `state`, else None.

        With output UNKNOWN any output is accepted (compute the next state only)."""
        ...

    def describe(self, input: Hashable, output: Hashable) -> str:
        """A short human-readable description of one operation and its output."""
        ...


@dataclass
class Verdict:
    """The result of checking one partition."""

    partition: str
    ok: bool  # True also when the search was exhausted (see `exhausted`)
    exhausted: bool  # the search budget ran out: neither proven nor refuted
    operations: int
    slice: list[Op] = field(default_factory=list)  # when not ok: smallest failing slice found
    steps: int = 0  # search steps spent on the whole partition (not on shrinking)

    def render(self, model: Model) -> str:
        """A readable timeline of `slice` (or a one-line summary when ok)."""
        if self.ok:
            what = "search budget exhausted, not proven" if self.exhausted else "linearizable"
            return f"partition {self.partition}: {what} ({self.operations} operations)"
        lines = [
            f"partition {self.partition}: not linearizable: no linearization exists for "
            f"these {len(self.slice)} of its {self.operations} operations:"
        ]
        for op in sorted(self.slice, key=lambda o: (o.call, o.id)):
            ret = "unknown" if op.ret is None else f"{op.ret:.6f}"
            output = UNKNOWN if op.ret is None else op.output
            lines.append(
                f"  op {op.id:<5} client {op.client:<4} call {op.call:.6f}  ret {ret:<10}  "
                f"{model.describe(op.input, output)}"
            )
        return "\n".join(lines)


_INF: Final = float("inf")


def _search(ops: Sequence[Op], model: Model, budget: int) -> tuple[bool | None, int]:
    """(True: linearizable, False: not, None: budget exhausted; steps used)."""
    n = len(ops)
    # Events sorted by time; at equal times calls come before returns, so an op
    # returning at t and one called at t are concurrent.
    events = sorted(
        [(op.call, 0, i) for i, op in enumerate(ops)]
        + [(_INF if op.ret is None else op.ret, 1, i) for i, op in enumerate(ops)]
    )
    head, tail = 2 * n, 2 * n + 1
    nxt = [0] * (2 * n + 2)
    prv = [0] * (2 * n + 2)
    node_op = [0] * (2 * n)
    is_call = [False] * (2 * n)
    call_node = [0] * n
    ret_node = [0] * n
    order = [head, *range(2 * n), tail]
    for k, (_, kind, i) in enumerate(events):
        node_op[k] = i
        if kind == 0:
            is_call[k] = True
            call_node[i] = k
        else:
            ret_node[i] = k
    for a, b in pairwise(order):
        nxt[a] = b
        prv[b] = a
    inputs = [op.input for op in ops]
    known = [op.ret is not None for op in ops]
    outputs = [op.output if op.ret is not None else UNKNOWN for op in ops]
    step = model.step

    state: Hashable = model.init()
    done_known = done_unknown = 0  # bitsets of the linearized ops, by index
    remaining = sum(known)
    any_unknown = remaining < n
    # Lowe's memo, strengthened for unknown ops: a configuration is dominated by
    # one already seen with the same state and known ops done but a subset of
    # the unknown ones, since leaving an unknown op out constrains nothing.
    seen: dict[tuple[int, Hashable], list[int]] = {}
    stack: list[tuple[int, Hashable]] = []
    # Each configuration tries its known candidates first and its unknown ones
    # only when blocked, so the smallest unknown sets are seen (and dominate) first.
    node, second, skipped = nxt[head], False, False
    steps = 0
    while remaining:
        if node != tail and is_call[node]:
            i = node_op[node]
            if known[i] == second:  # not this pass's kind
                skipped = skipped or not second
                node = nxt[node]
                continue
            if steps >= budget:
                return None, steps
            steps += 1  # the budget counts model steps
            new_state = step(state, inputs[i], outputs[i])
            if new_state is not None:
                bit = 1 << i
                if known[i]:
                    key, ub = (done_known | bit, new_state), done_unknown
                else:
                    key, ub = (done_known, new_state), done_unknown | bit
                subsets = seen.get(key)
                if subsets is None:
                    seen[key] = [ub]
                    fresh = True
                else:
                    fresh = all(u & ~ub for u in subsets)
                    if fresh:
                        subsets.append(ub)
                if fresh:
                    stack.append((i, state))
                    state = new_state
                    if known[i]:
                        done_known |= bit
                        remaining -= 1
                    else:
                        done_unknown |= bit
                    c, r = node, ret_node[i]  # lift both events out of the list
                    nxt[prv[c]] = nxt[c]
                    prv[nxt[c]] = prv[c]
                    nxt[prv[r]] = nxt[r]
                    prv[nxt[r]] = prv[r]
                    node, second, skipped = nxt[head], False, False
                    continue
            node = nxt[node]
            continue
        # Blocked at the return event of a pending op. (The tail is unreachable
        # while known ops remain, as their returns come before it.)
        if skipped and not second:
            node, second = nxt[head], True
            continue
        if not stack:
            return False, steps
        i, state = stack.pop()  # undo the last linearization
        if known[i]:
            done_known &= ~(1 << i)
            remaining += 1
        else:
            done_unknown &= ~(1 << i)
        c, r = call_node[i], ret_node[i]  # unlift in reverse order
        nxt[prv[r]] = r
        prv[nxt[r]] = r
        nxt[prv[c]] = c
        prv[nxt[c]] = c
        node, second, skipped = nxt[c], not known[i], any_unknown
    return True, steps


class _Shrinker:
    """Runs bounded searches while shrinking; a search that runs out counts as passing."""

    def __init__(self, model: Model, budget: int) -> None:
        self.model = model
        self.left = budget

    def fails(self, ops: Sequence[Op]) -> bool:
        if self.left <= 0:
            return False
        result, steps = _search(ops, self.model, self.left)
        self.left -= steps
        return result is False


def _unknown(op: Op) -> Op:
    return replace(op, ret=None, output=UNKNOWN)


def _time_prefix(ops: Sequence[Op], t: float) -> list[Op]:
    """Every op called by `t`; those not returned by `t` become unknown-outcome."""
    return [
        op if op.ret is not None and op.ret <= t else _unknown(op) for op in ops if op.call <= t
    ]


def _times(ops: Sequence[Op]) -> list[float]:
    return sorted({op.call for op in ops} | {op.ret for op in ops if op.ret is not None})


def _shrink(ops: list[Op], model: Model, budget: int) -> list[Op]:
    """The smallest failing slice of a failing history found within `budget` steps.

    A drop is kept only if the slice still fails, still fails with the dropped op
    re-added as an unknown-outcome op, and does not fail any earlier in time: so
    the slice keeps the ops its failure depends on (the write a stale read saw)
    rather than trading the violation for a new one (a read of a dropped write)."""
    shrinker = _Shrinker(model, budget)
    current = ops
    times = _times(ops)
    for t in times[:-1]:
        prefix = _time_prefix(ops, t)
        if shrinker.fails(prefix):
            current = prefix
            break
    changed = True
    while changed and shrinker.left > 0:
        changed = False
        times = _times(current)
        before = times[-2] if len(times) > 1 else None
        for k in reversed(range(len(current))):
            if len(current) == 1:
                continue
            candidate = current[:k] + current[k + 1 :]
            relaxed = [*current[:k], _unknown(current[k]), *current[k + 1 :]]
            if (
                shrinker.fails(candidate)
                and (current[k].ret is None or shrinker.fails(relaxed))
                and (before is None or not shrinker.fails(_time_prefix(candidate, before)))
                and shrinker.left > 0
            ):
                current = candidate
                changed = True
    return current


def check_partition(
    ops: Sequence[Op], model: Model, *, budget: int = 200_000, shrink_budget: int | None = None
) -> Verdict:
    """Check the ops of one partition against `model`.

    `budget` bounds the search (in steps); `shrink_budget` (default: `budget`) bounds
    the extra searches that shrink a failing history to a small slice."""
    ordered = sorted(ops, key=lambda o: (o.call, o.id))
    partition = ordered[0].partition if ordered else ""
    for op in ordered:
        if op.ret is not None and op.ret < op.call:
            raise ValueError(f"op {op.id} returns before its call ({op.ret} < {op.call})")
    result, steps = _search(ordered, model, budget)
    if result is not False:
        return Verdict(partition, True, result is None, len(ordered), [], steps)
    slice_ = _shrink(ordered, model, budget if shrink_budget is None else shrink_budget)
    return Verdict(partition, False, False, len(ordered), slice_, steps)


def check_history(
    ops: Iterable[Op],
    model_for: Callable[[str], Model | None],
    *,
    budget: int = 200_000,
) -> list[Verdict]:
    """Check every partition for which `model_for` gives a model; verdicts sorted by partition."""
    by_partition: defaultdict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_partition[op.partition].append(op)
    verdicts = []
    for partition in sorted(by_partition):
        model = model_for(partition)
        if model is not None:
            verdicts.append(check_partition(by_partition[partition], model, budget=budget))
    return verdicts
