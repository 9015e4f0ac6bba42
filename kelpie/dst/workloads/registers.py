"""Registers: the paths the ledger never takes, each one counted and checked.

A ``Register`` actor holds ``value`` and a ``writes`` counter in its state, a
copy of the value in KV ``v`` and a few KV keys under ``k/``. Its operations:

- ``write {v}``: state value and KV ``v`` in one invocation; returns the
  previous ``[value, kv v, writes]``;
- ``peek {delay}``: reads the state, sleeps ``delay`` (virtual) seconds, then
  reads KV ``v``; returns ``[value, kv v, writes]``, which must come from one
  committed version (torn reads and two live activations show up here);
- ``put_read {puts, drop, prefix}``: sets ``puts``, deletes ``drop``, reads the
  puts back and lists ``prefix`` in the same invocation (read-own-writes);
- ``delete {key}``: returns whether the key existed, then deletes it;
- ``blind_delete {key}``: deletes it without reading anything (half of them
  without an idempotency key): an invocation whose only effect is a delete
  must still commit;
- ``list {prefix}``: the keys under ``prefix``, sorted;
- ``fail {v}``: changes the state, writes and deletes KV, then raises
  ``RegisterFailure``: nothing may be stored and memory must be rolled back
  (a later peek or write shows it);
- ``snapshot``: ``[value, writes, [[key, value], ...]]`` (end of run).

``RegisterModel`` decides every output exactly; the recorder checks each
actor's history against it. Clients also replay ok keyed calls while their
key is provably still inside the idempotency window, and compare the replay's
result with the first one. End-of-run invariants compare storage with what
the clients' calls allow.
"""

from __future__ import annotations

import asyncio
import builtins
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from kelpie.actor.actor import Actor
from kelpie.actor.context import ActorContext
from kelpie.dst.harness import Outcome, Simulation, WorkloadBase
from kelpie.dst.linearizability import Model
from kelpie.dst.recorder import freeze
from kelpie.dst.workloads.models import RegisterModel
from kelpie.identity import ActorId

__all__ = ["Register", "RegisterFailure", "RegisterState", "RegistersWorkload"]

NAMESPACE: Final = "register"
KEYS: Final = ("k/a", "k/ab", "k/b", "k/c")
PREFIXES: Final = ("", "k/", "k/a", "k/b", "x")
DELAYS: Final = (0.0, 0.0005, 0.002, 0.01, 0.05, 0.1, 0.25)
DEFAULT_WINDOW: Final = 1000


@dataclass
class RegisterState:
    value: int = 0
    writes: int = 0


class RegisterFailure(Exception):
    """Raised by ``fail`` after changing everything: the invocation must leave no trace."""


async def _kv_v(ctx: ActorContext[RegisterState]) -> int | None:
    raw = await ctx.kv_get(b"v")
    return None if raw is None else int(raw)


class Register(Actor[RegisterState]):
    state_type = RegisterState

    async def write(self, ctx: ActorContext[RegisterState], payload: dict[str, Any]) -> list[Any]:
        state = ctx.state
        previous = [state.value, await _kv_v(ctx), state.writes]
        state.value = int(payload["v"])
        state.writes += 1
        await ctx.kv_set(b"v", str(state.value).encode())
        return previous

    async def peek(self, ctx: ActorContext[RegisterState], payload: dict[str, Any]) -> list[Any]:
        value, writes = ctx.state.value, ctx.state.writes
        await asyncio.sleep(float(payload["delay"]))
        return [value, await _kv_v(ctx), writes]

    async def put_read(
        self, ctx: ActorContext[RegisterState], payload: dict[str, Any]
    ) -> list[list[Any]]:
        puts: dict[str, str] = payload["puts"]
        for key in sorted(puts):
            await ctx.kv_set(key.encode(), puts[key].encode())
        drop = payload.get("drop")
        if drop is not None:
            await ctx.kv_delete(drop.encode())
        read: list[Any] = []
        for key in sorted(puts):
            raw = await ctx.kv_get(key.encode())
            read.append(None if raw is None else raw.decode())
        listed = await ctx.kv_list_keys(str(payload["prefix"]).encode())
        return [read, [key.decode() for key in listed]]

    async def delete(self, ctx: ActorContext[RegisterState], payload: dict[str, Any]) -> bool:
        key = str(payload["key"]).encode()
        existed = await ctx.kv_exists(key)
        await ctx.kv_delete(key)
        return existed

    async def blind_delete(self, ctx: ActorContext[RegisterState], payload: dict[str, Any]) -> None:
        await ctx.kv_delete(str(payload["key"]).encode())

    async def fail(self, ctx: ActorContext[RegisterState], payload: dict[str, Any]) -> None:
        ctx.state.value = int(payload["v"])
        ctx.state.writes += 1
        await ctx.kv_set(b"v", str(payload["v"]).encode())
        await ctx.kv_set(f"f/{payload['id']}".encode(), b"1")
        await ctx.kv_delete(KEYS[0].encode())
        raise RegisterFailure(f"fail {payload['id']}: everything it did must be undone")

    async def snapshot(self, ctx: ActorContext[RegisterState], payload: Any) -> list[Any]:
        pairs: list[list[str]] = []
        for key in await ctx.kv_list_keys():
            raw = await ctx.kv_get(key)
            pairs.append([key.decode(), "" if raw is None else raw.decode()])
        return [ctx.state.value, ctx.state.writes, pairs]

    async def list(
        self, ctx: ActorContext[RegisterState], payload: dict[str, Any]
    ) -> builtins.list[str]:
        return [key.decode() for key in await ctx.kv_list_keys(str(payload["prefix"]).encode())]


@dataclass
class _Done:
    """An ok keyed call, and the keyed-call counts when it began."""

    started: int
    open: int
    operation: str
    payload: dict[str, Any]
    key: str
    result: Any


@dataclass
class _Actor:
    """What the clients know about one register."""

    id: ActorId
    keyed_started: int = 0
    """Keyed calls begun on it (replays included)."""
    keyed_open: int = 0
    """Keyed calls that may still commit: in flight, or given up on (forever)."""
    replaying: int = 0
    """Replays in flight (new keyed calls wait: clients send theirs without a key)."""
    recent: list[_Done] = field(default_factory=list)
    """Ok keyed calls whose key may still be inside the idempotency window."""
    written: dict[int, str] = field(default_factory=dict)
    """Value -> status of every write issued (and fail values: "fail")."""
    puts: dict[str, set[str]] = field(default_factory=dict)
    """Key -> every value a put_read that may have committed wrote to it."""
    writes_ok: int = 0
    writes_unknown: int = 0


# Operation mix: (cumulative probability, operation).
_MIX: Final = (
    (0.24, "write"),
    (0.44, "peek"),
    (0.60, "put_read"),
    (0.66, "delete"),
    (0.72, "blind_delete"),
    (0.82, "list"),
    (0.90, "fail"),
    (1.00, "peek"),
)
_MUTATING: Final = frozenset({"write", "put_read", "delete", "blind_delete", "fail"})


class RegistersWorkload(WorkloadBase):
    """Clients write, peek, list, delete, fail and replay on a few registers."""

    name = "registers"
    models: ClassVar[dict[str, Model]] = {NAMESPACE: RegisterModel()}
    required_paths: ClassVar[tuple[str, ...]] = (
        "register_write",
        "peek",
        "read_own_write",
        "delete",
        "delete_absent",
        "blind_delete",
        "list_keys",
        "mutate_then_raise",
        "replay_compared",
        "unkeyed_call",
    )

    def __init__(self, registers: int = 3, *, prefix: str = "reg") -> None:
        self.registers = registers
        self.prefix = prefix
        self._actors: dict[ActorId, _Actor] = {}
        self._counters: dict[int, int] = {}

    async def setup(self, sim: Simulation) -> None:
        sim.register(NAMESPACE, Register)
        for i in range(self.registers):
            actor = sim.actor(NAMESPACE, f"{self.prefix}{i}")
            self._actors[actor] = _Actor(actor)

    # -- calls -----------------------------------------------------------------

    async def _call(
        self,
        sim: Simulation,
        info: _Actor,
        operation: str,
        payload: Any,
        key: str | None,
        rng: random.Random,
    ) -> Outcome:
        """``sim.call``, keeping the counts that prove a key is still in the window."""
        if key is None:
            outcome: Outcome = await _sim_call(sim, info.id, operation, payload, None, rng)
            if outcome.ok:
                _count(sim, "unkeyed_call")
            return outcome
        info.keyed_started += 1
        info.keyed_open += 1
        try:
            outcome = await _sim_call(sim, info.id, operation, payload, key, rng)
        finally:
            info.keyed_open -= 1
        if outcome.status == "gave_up":
            info.keyed_open += 1  # it may still commit at any time: counted forever
        return outcome

    async def step(self, sim: Simulation, client: int, rng: random.Random) -> None:
        n = self._counters[client] = self._counters.get(client, 0) + 1
        call_id = f"r{client}.{n}"
        info = self._actors[rng.choice(list(self._actors))]
        draw = rng.random()
        operation = next(op for bound, op in _MIX if draw < bound)
        payload: dict[str, Any] = {"id": call_id}
        if operation in ("write", "fail"):
            payload["v"] = (client + 1) * 100_000 + n
        elif operation == "peek":
            payload["delay"] = rng.choice(DELAYS)
        elif operation == "put_read":
            chosen = rng.sample(KEYS, rng.randint(1, 2))
            payload["puts"] = {key: f"{call_id}:{key}" for key in chosen}
            payload["drop"] = rng.choice(KEYS) if rng.random() < 0.3 else None
            payload["prefix"] = rng.choice(PREFIXES)
        elif operation in ("delete", "blind_delete"):
            payload["key"] = rng.choice(KEYS)
        elif operation == "list":
            payload["prefix"] = rng.choice(PREFIXES)
        if operation == "blind_delete":
            keyed = rng.random() < 0.5  # a key's record alone would make it commit
        else:
            keyed = rng.random() < (0.95 if operation in _MUTATING else 0.2)
        key = call_id if keyed and not info.replaying else None
        started, open_before = info.keyed_started, info.keyed_open
        outcome = await self._call(sim, info, operation, payload, key, rng)
        self._note(sim, info, operation, payload, outcome)
        if key is not None and outcome.ok:
            info.recent.append(_Done(started, open_before, operation, payload, key, outcome.result))
        if rng.random() < 0.35:
            await self._replay(sim, info, rng)

    def _note(
        self,
        sim: Simulation,
        info: _Actor,
        operation: str,
        payload: dict[str, Any],
        outcome: Outcome,
    ) -> None:
        """Count the path taken and remember what may have been stored."""
        status = outcome.status
        if operation == "write":
            info.written[payload["v"]] = status
            if status == "ok":
                info.writes_ok += 1
                _count(sim, "register_write")
            elif status == "gave_up":
                info.writes_unknown += 1
        elif operation == "fail":
            info.written[payload["v"]] = "fail"
            if status == "rejected":
                _count(sim, "mutate_then_raise")
        elif operation == "put_read":
            if status != "rejected":
                for key, value in payload["puts"].items():
                    info.puts.setdefault(key, set()).add(value)
            if status == "ok":
                _count(sim, "read_own_write")
                _count(sim, "list_keys")
        elif status == "ok":
            if operation == "peek":
                _count(sim, "peek")
            elif operation == "list":
                _count(sim, "list_keys")
            elif operation == "delete":
                _count(sim, "delete" if outcome.result else "delete_absent")
            elif operation == "blind_delete":
                _count(sim, "blind_delete")

    @staticmethod
    def _others(info: _Actor, done: _Done) -> int:
        """Keyed calls that may have committed after ``done`` did (an upper bound).

        Every keyed call begun since it (minus itself), and every one that was
        open (in flight, or given up on) when it began. Its key is evicted only
        by the window-th keyed commit after its own.
        """
        return (info.keyed_started - done.started - 1) + done.open

    async def _replay(self, sim: Simulation, info: _Actor, rng: random.Random) -> None:
        """Send an earlier ok keyed call again while its key is surely remembered; compare.

        New keyed calls on this actor wait until the replay ends (clients send
        theirs without a key meanwhile), so none can join the count while it runs.
        Half the time the oldest call still inside the window is chosen: its
        slot is the next to be reused.
        """
        window: int = getattr(sim.config, "idempotency_window", DEFAULT_WINDOW)
        info.recent = [done for done in info.recent if self._others(info, done) < window]
        if info.replaying or not info.recent:
            _count(sim, "replay_outside_window")
            return
        done = info.recent[0] if rng.random() < 0.5 else rng.choice(info.recent)
        others = self._others(info, done)
        if others == window - 1:
            _count(sim, "replay_at_window_edge")
        info.replaying += 1
        try:
            again = await self._call(sim, info, done.operation, done.payload, done.key, rng)
        finally:
            info.replaying -= 1
        what = f"replay of {done.operation} {done.payload['id']} (key {done.key})"
        if again.status == "gave_up":
            return
        if again.status == "rejected":
            sim.violation(f"{info.id}: {what} of an ok call was rejected: {again.error!r}")
            return
        _count(sim, "replay_compared")
        if freeze(again.result) != freeze(done.result):
            sim.violation(
                f"{info.id}: {what}, {others} keyed calls since (window {window}), returned "
                f"{again.result!r}; the first returned {done.result!r}"
            )

    # -- invariants ------------------------------------------------------------

    def owns(self, actor: ActorId) -> bool:
        return actor in self._actors

    async def check_actor(self, sim: Simulation, actor: ActorId) -> None:
        if actor in self._actors:
            await self._value_matches_kv(sim, actor)

    async def _value_matches_kv(self, sim: Simulation, actor: ActorId) -> RegisterState | None:
        """State value and KV ``v`` agree; returns the state.

        They are two reads: a late commit (a paused process's) may land between
        them, so a mismatch is reported only if a second look sees the same.
        """
        seen: tuple[RegisterState | None, int | None] | None = None
        while True:
            state: RegisterState | None = await sim.state(actor, RegisterState)
            raw = await sim.kv(actor, b"v")
            stored = None if raw is None else int(raw)
            if state is None or state.writes == 0:
                if stored is None and (state is None or state.value == 0):
                    return state
            elif stored == state.value:
                return state
            if seen == (state, stored):
                sim.violation(f"{actor}: KV v={stored} but state {state} at t={sim.now:.6f}")
                return state
            seen = (state, stored)

    async def check(self, sim: Simulation) -> None:
        rng = sim.random.stream("registers/check")
        for actor, info in self._actors.items():
            state = await self._value_matches_kv(sim, actor)
            value, writes = (0, 0) if state is None else (state.value, state.writes)
            low, high = info.writes_ok, info.writes_ok + info.writes_unknown
            if not low <= writes <= high:
                sim.violation(
                    f"{actor}: {writes} writes stored, but clients saw {low} acknowledged "
                    f"and {high - low} in doubt"
                )
            status = info.written.get(value)
            if writes and status not in ("ok", "gave_up"):
                what = "never issued" if status is None else f"a {status} call's"
                sim.violation(f"{actor}: stored value {value} is {what} value")
            for key in await sim.kv_keys(actor):
                name = key.decode()
                if name == "v":
                    continue
                stored = await sim.kv(actor, key)
                allowed = info.puts.get(name, set())
                if stored is None or stored.decode() not in allowed:
                    sim.violation(
                        f"{actor}: KV {name}={stored!r} was never written by a call that "
                        "may have committed (a failed call's write, or a phantom)"
                    )
            # Through the runtime (recorded): the model must allow what a fresh process loads.
            outcome = await _sim_call(sim, actor, "snapshot", None, f"snapshot/{actor}", rng)
            if outcome.ok:
                _count(sim, "snapshot_checked")
            else:
                sim.violation(f"{actor}: snapshot with every fault off: {outcome.status}")


def _count(sim: Simulation, path: str, n: int = 1) -> None:
    count = getattr(sim, "count", None)
    if count is not None:
        count(path, n)


async def _sim_call(
    sim: Simulation,
    actor: ActorId,
    operation: str,
    payload: Any,
    key: str | None,
    rng: random.Random,
) -> Outcome:
    call: Any = sim.call
    attempts = 1 if key is None else None  # without a key a retry could apply twice
    outcome: Outcome = await call(actor, operation, payload, key=key, rng=rng, attempts=attempts)
    return outcome
