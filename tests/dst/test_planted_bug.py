"""A bug planted in the commit path is caught within 100 seeds.

The plant sits between the real runtime and its storage: each commit first
applies the invocation's KV writes (one transaction), then writes the state
and idempotency records in a second one -- which a fault may then fail. That
is the atomicity gap (LESSONS.md) with the real ``Runtime`` above it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import pytest

from kelpie.actor.keys import USER
from kelpie.dst.faults import FaultPlan
from kelpie.dst.harness import RUNTIMES, RuntimeKind, RuntimeLike, RuntimeOptions, SimConfig
from kelpie.dst.inspect import KelpieInspector
from kelpie.dst.process import kelpie_runtime
from kelpie.dst.storm import run_storm
from kelpie.identity import ActorId
from kelpie.storage.protocol import Storage, Transaction
from kelpie.storage.wrapper import StorageWrapper


class SplitCommitTransaction:
    def __init__(self, storage: Storage, actor: ActorId) -> None:
        self._storage = storage
        self._actor = actor
        self._reads = storage.transaction(actor)
        self._kv: dict[bytes, bytes | None] = {}
        self._rest: dict[bytes, bytes | None] = {}

    def _buffer(self, key: bytes) -> dict[bytes, bytes | None]:
        return self._kv if key.startswith(USER) else self._rest

    async def get(self, key: bytes) -> bytes | None:
        buffered = self._buffer(key)
        return buffered[key] if key in buffered else await self._reads.get(key)

    async def set(self, key: bytes, value: bytes) -> None:
        self._buffer(key)[key] = value

    async def delete(self, key: bytes) -> None:
        self._buffer(key)[key] = None

    async def list_keys(self, prefix: bytes = b"") -> list[bytes]:
        keys = set(await self._reads.list_keys(prefix))
        for key, value in (self._kv | self._rest).items():
            if key.startswith(prefix):
                keys.discard(key) if value is None else keys.add(key)
        return sorted(keys)

    async def commit(self) -> None:
        for key, value in self._kv.items():  # the KV writes land first...
            await (self._reads.delete(key) if value is None else self._reads.set(key, value))
        await self._reads.commit()
        async with self._storage.transaction(self._actor) as txn:  # ...the state may not
            for key, value in self._rest.items():
                await (txn.delete(key) if value is None else txn.set(key, value))

    async def abort(self) -> None:
        await self._reads.abort()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await (self.commit() if t is None else self.abort())


class SplitCommitStorage(StorageWrapper):
    def transaction(self, actor: ActorId) -> Transaction:
        return SplitCommitTransaction(self.inner, actor)


def planted_runtime(storage: Storage, options: RuntimeOptions) -> RuntimeLike:
    return kelpie_runtime(SplitCommitStorage(storage), options)


def test_planted_commit_path_bug_is_caught_within_100_seeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kind = RuntimeKind("planted", planted_runtime, KelpieInspector())
    monkeypatch.setitem(RUNTIMES, "planted", kind)
    config = SimConfig(seed=0, faults=FaultPlan.everything(), crashes=True, runtime="planted")
    storm = run_storm(range(100), config, "ledger", stop_on_failure=True)
    print(storm.summary())
    assert storm.failing, "the planted bug went unnoticed over 100 seeds"
    assert storm.results[-1].acknowledged > 0  # the planted runtime does work...
    print(f"caught by seed {storm.failing[0].seed}")  # ...and is caught anyway


def test_without_faults_the_plant_goes_unnoticed() -> None:
    """The control: with one runtime and no faults the plant stays hidden.

    (Two live runtimes or a paused one expose it even without injected faults:
    the split commit's second transaction then conflicts after the first landed.)
    """
    kind = RuntimeKind("planted", planted_runtime, KelpieInspector())
    RUNTIMES["planted"] = kind
    try:
        config = SimConfig(
            seed=0, faults=FaultPlan.none(), runtime="planted", runtimes=1, chaos=False
        )
        storm = run_storm(range(5), config, "ledger")
    finally:
        del RUNTIMES["planted"]
    print(storm.summary())
    assert storm.ok


def test_a_runtime_that_ignores_idempotency_keys_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Second plant: retries after CommitOutcomeUnknownError then apply twice."""
    from kelpie.runtime import Runtime

    class Forgetful(Runtime):
        async def invoke(
            self,
            actor_id: ActorId,
            operation: str,
            payload: object = None,
            *,
            idempotency_key: str | None = None,
        ) -> object:
            return await super().invoke(actor_id, operation, payload)

    def forgetful(storage: Storage, options: RuntimeOptions) -> RuntimeLike:
        return kelpie_runtime(storage, options, Forgetful)

    monkeypatch.setitem(
        RUNTIMES, "forgetful", RuntimeKind("forgetful", forgetful, KelpieInspector())
    )
    config = SimConfig(seed=0, faults=FaultPlan.everything(), runtime="forgetful")
    storm = run_storm(range(100), config, "ledger", stop_on_failure=True)
    print(storm.summary())
    assert storm.failing, "double application went unnoticed over 100 seeds"
    assert any("exactly once" in v for v in storm.failing[0].violations)
