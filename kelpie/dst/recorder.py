"""The history of one simulated seed: every logical client call, for the checker.

``HistoryRecorder`` is told about each logical call a client makes (one
``begin`` covering all its retries, then ``ok``, ``rejected`` or ``unknown``)
and at the end of the seed ``check(models)`` turns the calls into
``kelpie.dst.linearizability.Op`` records, one partition per actor, and asks
the checker whether each actor's history is linearizable against its
namespace's model. Payloads and results are JSON-like; they are frozen into
hashable values (lists become tuples, dicts sorted ``(key, value)`` tuples).

Replays: a call that reuses the idempotency key of an earlier call on the same
actor (``begin(..., key=...)``) is the same operation sent again. Workloads
only replay while the key is provably still remembered, so

- after an *ok* original, the replay has no effect and must return the
  original's result: a matching replay is dropped, a different one becomes an
  operation no linearization can place (its slice shows both);
- after an *unknown* original, the two are one application somewhere between
  the first call and the replay's return: they are merged into one operation;
- after a *rejected* original nothing was stored: the replay runs afresh.

A model may define ``input_of(operation, payload) -> Hashable`` to build
compact inputs from the frozen payload; the default input is
``(operation, payload)``.

Recording is cheap (one small list per call); the search runs only in
``check``, for namespaces that have a model.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Final

from kelpie.dst.linearizability import UNKNOWN, Model, Op, Verdict, check_partition
from kelpie.identity import ActorId

__all__ = ["DEFAULT_BUDGET", "HistoryRecorder", "ReplayMismatch", "freeze"]

DEFAULT_BUDGET: Final = 100_000
"""Search steps per actor before a partition is reported as exhausted."""

_SCALARS: Final = (str, int, float, bool, type(None), bytes)

# Indexes into a recorded call (a plain list: cheaper than an object per call).
_ACTOR, _OPERATION, _PAYLOAD, _CLIENT, _CALL, _RET, _OUTPUT, _KEY, _STATUS = range(9)
_PENDING, _OK, _REJECTED, _UNKNOWN = range(4)


def freeze(value: Any) -> Hashable:
    """A hashable copy of a JSON-like value: lists/tuples -> tuples, dicts -> sorted items."""
    kind = type(value)
    if kind in _SCALARS:
        return value  # type: ignore[no-any-return]
    if kind is list or kind is tuple:
        return tuple([freeze(item) for item in value])
    if kind is dict:
        items = [(key, freeze(item)) for key, item in value.items()]
        try:
            items.sort()
        except TypeError:  # keys of mixed types
            items.sort(key=repr)
        return tuple(items)
    if kind is set or kind is frozenset:
        return frozenset(freeze(item) for item in value)
    if isinstance(value, Hashable):
        return value
    return repr(value)


class ReplayMismatch:
    """The input of a replay that returned something else than its ok original.

    No model step accepts it (``step`` sees an input it does not know), so the
    replay stays in the failing slice next to the original.
    """

    __slots__ = ("expected", "original")

    def __init__(self, original: Hashable, expected: Hashable) -> None:
        self.original = original
        self.expected = expected

    def __repr__(self) -> str:
        return f"replay of {self.original!r} (first result {self.expected!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ReplayMismatch)
            and other.original == self.original
            and other.expected == self.expected
        )

    def __hash__(self) -> int:
        return hash((ReplayMismatch, self.original, self.expected))


class _ReplayAware:
    """A model wrapper that rejects every ``ReplayMismatch`` input."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def init(self) -> Hashable:
        return self.model.init()

    def step(self, state: Hashable, input: Hashable, output: Hashable) -> Hashable | None:
        if isinstance(input, ReplayMismatch):
            return None
        return self.model.step(state, input, output)

    def describe(self, input: Hashable, output: Hashable) -> str:
        if isinstance(input, ReplayMismatch):
            return (
                f"REPLAY of {self.model.describe(input.original, input.expected)} "
                f"returned {output!r}"
            )
        return self.model.describe(input, output)


class HistoryRecorder:
    """Every logical call of one seed, and the linearizability check over them."""

    def __init__(self, *, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self._calls: list[list[Any]] = []
        self.exhausted = 0
        """Partitions whose last ``check`` ran out of search budget (neither proven nor refuted)."""
        self.verdicts: list[Verdict] = []
        """The verdicts of the last ``check``."""

    @property
    def operations(self) -> int:
        return len(self._calls)

    def begin(
        self,
        actor: ActorId,
        operation: str,
        payload: Any,
        client: int,
        now: float,
        *,
        key: str | None = None,
    ) -> int:
        """A logical call starts (its first attempt); returns its handle."""
        calls = self._calls
        calls.append([actor, operation, freeze(payload), client, now, None, UNKNOWN, key, _PENDING])
        return len(calls) - 1

    def ok(self, handle: int, result: Any, now: float) -> None:
        """The call's final answer: ``result``."""
        call = self._calls[handle]
        call[_RET] = now
        call[_OUTPUT] = freeze(result)
        call[_STATUS] = _OK

    def rejected(self, handle: int, error: BaseException, now: float) -> None:
        """The handler raised ``error``: output ``("error", type name)``."""
        call = self._calls[handle]
        call[_RET] = now
        call[_OUTPUT] = ("error", type(error).__name__)
        call[_STATUS] = _REJECTED

    def unknown(self, handle: int) -> None:
        """The client gave up: the call may take effect at any moment after it began, or never."""
        call = self._calls[handle]
        call[_RET] = None
        call[_OUTPUT] = UNKNOWN
        call[_STATUS] = _UNKNOWN

    # -- checking --------------------------------------------------------------

    def partitions(self, models: Mapping[str, Model]) -> dict[ActorId, list[Op]]:
        """The recorded calls of actors whose namespace has a model, as ``Op``s per actor."""
        by_actor: dict[ActorId, list[list[Any]]] = {}
        for call in self._calls:
            actor = call[_ACTOR]
            if actor.namespace in models:
                by_actor.setdefault(actor, []).append(call)
        result: dict[ActorId, list[Op]] = {}
        for actor, calls in by_actor.items():
            model = models[actor.namespace]
            input_of = getattr(model, "input_of", None)
            # [call, ret, input, output, client, status]; None once merged into a replay
            rows: list[list[Any] | None] = []
            by_key: dict[str, int] = {}  # key -> index in rows of its representative
            for call in calls:
                operation, payload = call[_OPERATION], call[_PAYLOAD]
                input: Hashable = (
                    (operation, payload) if input_of is None else input_of(operation, payload)
                )
                status = call[_STATUS]
                if status == _PENDING:  # never finished (the run was cut short)
                    status, ret, output = _UNKNOWN, None, UNKNOWN
                else:
                    ret, output = call[_RET], call[_OUTPUT]
                start = call[_CALL]
                key = call[_KEY]
                index = by_key.get(key) if key is not None else None
                first = rows[index] if index is not None else None
                if first is not None and first[2] == input:
                    if first[5] == _OK:
                        if output is UNKNOWN or output == first[3]:
                            continue  # remembered: no effect, same answer
                        input = ReplayMismatch(input, first[3])
                    elif first[5] == _UNKNOWN:
                        start = first[0]  # one application in [first call, this return]
                        rows[index] = None  # type: ignore[index]
                rows.append([start, ret, input, output, call[_CLIENT], status])
                if key is not None:
                    by_key[key] = len(rows) - 1
            kept = sorted((row for row in rows if row is not None), key=lambda row: row[0])
            partition = str(actor)
            result[actor] = [
                Op(number, partition, row[0], row[1], row[2], row[3], client=row[4])
                for number, row in enumerate(kept)
            ]
        return result

    def check(self, models: Mapping[str, Model]) -> list[str]:
        """One message per actor whose history is not linearizable, with its smallest slice."""
        messages: list[str] = []
        self.exhausted = 0
        self.verdicts = []
        for actor, ops in sorted(self.partitions(models).items()):
            if not ops:
                continue
            model = models[actor.namespace]
            if any(isinstance(op.input, ReplayMismatch) for op in ops):
                model = _ReplayAware(model)
            verdict = check_partition(ops, model, budget=self.budget)
            self.verdicts.append(verdict)
            if verdict.exhausted:
                self.exhausted += 1
            if not verdict.ok:
                messages.append(
                    f"{actor}: history not linearizable ({verdict.operations} operations); "
                    f"smallest failing slice ({len(verdict.slice)} operations):\n"
                    + verdict.render(model)
                )
        return messages
