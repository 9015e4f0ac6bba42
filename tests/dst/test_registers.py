"""The registers workload: its model, its actor, and a storm over today's runtime."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Hashable
from typing import Any

from kelpie.dst.faults import FaultPlan
from kelpie.dst.harness import SimConfig
from kelpie.dst.linearizability import UNKNOWN, Op, check_partition
from kelpie.dst.recorder import freeze
from kelpie.dst.storm import run_storm
from kelpie.dst.workloads.models import RegisterModel
from kelpie.dst.workloads.registers import (
    KEYS,
    PREFIXES,
    Register,
    RegisterFailure,
    RegistersWorkload,
)
from kelpie.identity import ActorId
from kelpie.runtime import Runtime
from kelpie.storage.memory import MemoryStorage
from tests.dst.conftest import dst_seeds

MODEL = RegisterModel()


def _input(operation: str, payload: Any) -> Hashable:
    return MODEL.input_of(operation, freeze(payload))


def test_the_model_rejects_a_torn_peek() -> None:
    state = MODEL.step(MODEL.init(), _input("write", {"id": "a", "v": 1}), (0, None, 0))
    assert state == (1, 1, (("v", "1"),))
    peek = _input("peek", {"id": "p", "delay": 0.1})
    assert MODEL.step(state, peek, (1, 1, 1)) == state
    assert MODEL.step(state, peek, (1, 2, 1)) is None  # state of one commit, KV of another
    assert MODEL.step(state, peek, (0, 1, 1)) is None
    assert MODEL.step(state, peek, UNKNOWN) == state

    # A peek that overlaps a write may see either version, never half of each.
    ops = [
        Op(0, "r", 0.0, 1.0, _input("write", {"id": "a", "v": 1}), (0, None, 0)),
        Op(1, "r", 2.0, 4.0, _input("write", {"id": "b", "v": 2}), (1, 1, 1)),
        Op(2, "r", 1.5, 5.0, peek, (2, 2, 2)),
    ]
    assert check_partition(ops, MODEL).ok
    torn = [*ops[:2], Op(2, "r", 1.5, 5.0, peek, (1, 2, 1))]
    verdict = check_partition(torn, MODEL)
    print(verdict.render(MODEL))
    assert not verdict.ok


def test_the_model_decides_every_register_output() -> None:
    state = MODEL.init()
    puts = {"id": "x", "puts": {"k/a": "1", "k/b": "2"}, "drop": "k/b", "prefix": "k/"}
    assert MODEL.step(state, _input("put_read", puts), (("1", "2"), ("k/a", "k/b"))) is None
    state = MODEL.step(state, _input("put_read", puts), (("1", None), ("k/a",)))
    assert state == (0, 0, (("k/a", "1"),))
    assert MODEL.step(state, _input("delete", {"id": "d", "key": "k/b"}), True) is None
    assert MODEL.step(state, _input("delete", {"id": "d", "key": "k/b"}), False) == state
    assert MODEL.step(state, _input("list", {"id": "l", "prefix": ""}), ("k/a",)) == state
    assert MODEL.step(state, _input("list", {"id": "l", "prefix": "k/b"}), ("k/a",)) is None
    fail = _input("fail", {"id": "f", "v": 9})
    assert MODEL.step(state, fail, ("error", "RegisterFailure")) == state
    assert MODEL.step(state, fail, None) is None  # a failing handler cannot succeed
    snapshot = _input("snapshot", None)
    assert MODEL.step(state, snapshot, (0, 0, (("k/a", "1"),))) == state
    assert MODEL.step(state, snapshot, (0, 0, ())) is None
    state = MODEL.step(state, _input("delete", {"id": "d", "key": "k/a"}), True)
    assert state == (0, 0, ())


def test_the_actor_returns_what_the_model_says_one_call_at_a_time() -> None:
    """A random sequence through a real runtime: the model accepts every output."""

    async def main() -> None:
        rng = random.Random(7)
        actor = ActorId("register", "r")
        async with MemoryStorage() as storage, Runtime(storage, idempotency_window=8) as rt:
            rt.register("register", Register)
            state = MODEL.init()
            for n in range(300):
                operation = rng.choice(["write", "peek", "put_read", "delete", "list", "fail"])
                payload: dict[str, Any] = {"id": str(n), "v": n + 1, "delay": 0.0}
                payload["key"] = rng.choice(KEYS)
                payload["prefix"] = rng.choice(PREFIXES)
                payload["puts"] = {k: f"{n}{k}" for k in rng.sample(KEYS, 2)}
                payload["drop"] = rng.choice([None, *KEYS])
                key = str(n) if rng.random() < 0.5 else None
                try:
                    output: Hashable = freeze(
                        await rt.invoke(actor, operation, payload, idempotency_key=key)
                    )
                except RegisterFailure:
                    output = ("error", "RegisterFailure")
                after = MODEL.step(state, _input(operation, payload), output)
                assert after is not None, (n, operation, payload, state, output)
                state = after
            final = freeze(await rt.invoke(actor, "snapshot"))
            assert MODEL.step(state, _input("snapshot", None), final) == state

    asyncio.run(main())


def test_registers_storm_passes_and_takes_every_required_path() -> None:
    seeds = dst_seeds(range(60))
    config = SimConfig(seed=0, faults=FaultPlan.everything(), crashes=True)
    storm = run_storm(seeds, config, "registers")
    print()
    print(f"seeds {seeds[0]}..{seeds[-1]}")
    print(storm.summary())
    assert storm.seeds == len(seeds)
    assert storm.violations == 0, storm.summary()
    assert storm.invocations > 0
    assert {"delete", "list_keys", "read_own_write", "mutate_then_raise", "replay_compared"} <= set(
        RegistersWorkload.required_paths
    )
    if "KELPIE_DST_SEED" not in os.environ:
        taken = storm.coverage
        assert all(taken.get(path, 0) > 0 for path in RegistersWorkload.required_paths), taken
        assert taken.get("history_operations", 0) > 0  # the histories were checked
