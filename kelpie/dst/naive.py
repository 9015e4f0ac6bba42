"""A deliberately naive runtime: the atomicity gap of LESSONS.md, kept as a foil.

``NaiveRuntime`` runs the same ``Actor`` classes as ``kelpie.runtime.Runtime``
but its context writes every ``kv_set`` straight to storage and saves the
state afterwards in a separate transaction. A failure between the two leaves
the KV write applied and the state not: the simulation must catch that
(``tests/dst/test_seed_scenario.py``). Never use it for anything else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any, Generic, TypeVar

from kelpie.actor.actor import Actor, handlers_of
from kelpie.errors import RuntimeClosedError, UnknownActorTypeError, UnknownOperationError
from kelpie.identity import ActorId
from kelpie.storage.protocol import Storage

__all__ = ["NaiveContext", "NaiveInspector", "NaiveRuntime"]

S = TypeVar("S")

_STATE = b"naive-state"
_IDEMPOTENCY = b"naive-idem/"
_USER = b"naive-kv/"


class NaiveContext(Generic[S]):
    """Quacks like ``ActorContext``; ``kv_*`` go straight to storage (the bug)."""

    def __init__(self, storage: Storage, actor_id: ActorId, state: S) -> None:
        self._storage = storage
        self.actor_id = actor_id
        self.state = state

    async def kv_get(self, key: bytes) -> bytes | None:
        return await self._storage.get(self.actor_id, _USER + key)

    async def kv_set(self, key: bytes, value: bytes) -> None:
        await self._storage.set(self.actor_id, _USER + key, value)

    async def kv_delete(self, key: bytes) -> None:
        await self._storage.delete(self.actor_id, _USER + key)

    async def kv_exists(self, key: bytes) -> bool:
        return await self.kv_get(key) is not None

    async def kv_list_keys(self, prefix: bytes = b"") -> list[bytes]:
        keys = await self._storage.list_keys(self.actor_id, _USER + prefix)
        return [k[len(_USER) :] for k in keys]


def _encode_state(state: Any) -> bytes:
    value = (
        dataclasses.asdict(state)
        if dataclasses.is_dataclass(state) and not isinstance(state, type)
        else state
    )
    return json.dumps(value, sort_keys=True).encode()


def _decode_state(raw: bytes | None, state_type: type[Any]) -> Any:
    if raw is None:
        return state_type()
    value = json.loads(raw)
    return value if state_type is dict else state_type(**value)


class NaiveRuntime:
    """Loads the state on every invocation, runs the handler, then saves the state.

    It is careful in every other way (memory never outlives a failure, retries
    with an idempotency key are answered from a record saved with the state),
    so the only bug the simulation can find is the atomicity gap.
    """

    def __init__(self, storage: Storage, *, invocation_timeout: float = 30.0) -> None:
        self.storage = storage
        self._types: dict[str, type[Actor[Any]]] = {}
        self._locks: dict[ActorId, asyncio.Lock] = {}
        self._closed = False

    def register(self, namespace: str, actor_cls: type[Actor[Any]]) -> None:
        self._types[namespace] = actor_cls

    async def invoke(
        self,
        actor_id: ActorId,
        operation: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        if self._closed:
            raise RuntimeClosedError("the naive runtime is closed")
        actor_cls = self._types.get(actor_id.namespace)
        if actor_cls is None:
            raise UnknownActorTypeError(actor_id.namespace)
        if operation not in handlers_of(actor_cls):
            raise UnknownOperationError(operation)
        lock = self._locks.setdefault(actor_id, asyncio.Lock())
        async with lock:  # one invocation of an actor at a time, like the real runtime
            if idempotency_key is not None:
                previous = await self.storage.get(actor_id, _IDEMPOTENCY + idempotency_key.encode())
                if previous is not None:
                    return json.loads(previous)
            state = _decode_state(await self.storage.get(actor_id, _STATE), actor_cls.state_type)
            ctx = NaiveContext(self.storage, actor_id, state)
            result = await getattr(actor_cls(), operation)(ctx, payload)
            # The gap: the handler's kv_set calls have already landed; the state
            # and the idempotency record follow in a separate transaction.
            async with self.storage.transaction(actor_id) as txn:
                await txn.set(_STATE, _encode_state(ctx.state))
                if idempotency_key is not None:
                    await txn.set(
                        _IDEMPOTENCY + idempotency_key.encode(), json.dumps(result).encode()
                    )
        return result

    async def close(self) -> None:
        self._closed = True


class NaiveInspector:
    """Reads ``NaiveRuntime``'s records."""

    async def state(self, storage: Storage, actor: ActorId, state_type: type[Any]) -> Any | None:
        raw = await storage.get(actor, _STATE)
        return None if raw is None else _decode_state(raw, state_type)

    async def kv(self, storage: Storage, actor: ActorId, key: bytes) -> bytes | None:
        return await storage.get(actor, _USER + key)

    async def kv_keys(self, storage: Storage, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        return [k[len(_USER) :] for k in await storage.list_keys(actor, _USER + prefix)]
