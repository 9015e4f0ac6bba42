"""Versioned state (issue 14): migrations on load, newer records refused, field rules.

Each test writes records with one class and loads them with another registered under
the same namespace, as a deploy does, through ``Runtime.invoke`` on memory://, LMDB
and Redis.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec
import pytest

from kelpie import (
    Actor,
    ActorActiveElsewhereError,
    ActorContext,
    ActorId,
    ConfigError,
    CorruptStateError,
    Runtime,
    StateVersionTooNewError,
    Storage,
)
from kelpie.actor.codec import StateRecord
from kelpie.actor.keys import STATE_KEY

BACKENDS = pytest.mark.parametrize("storage_backend", ["memory", "lmdb", "redis"], indirect=True)
ALICE = ActorId("acct", "alice")


@dataclass
class AccountV1:
    balance: int = 0
    owner: str = ""


@dataclass
class Holder:
    name: str
    since: datetime


def _nobody() -> Holder:
    return Holder("", datetime(2000, 1, 1, tzinfo=UTC))


@dataclass
class AccountV3:
    cents: int = 0
    holder: Holder = field(default_factory=_nobody)
    notes: list[str] = field(default_factory=list)


class _Base(Actor[Any]):
    async def get(self, ctx: ActorContext[Any], payload: Any) -> Any:
        state = ctx.state
        if dataclasses.is_dataclass(state) and not isinstance(state, type):
            state = dataclasses.asdict(state)
        return msgspec.to_builtins(state)  # a datetime as its ISO string

    async def put(self, ctx: ActorContext[Any], payload: dict[str, Any]) -> None:
        for name, value in payload.items():
            setattr(ctx.state, name, value)

    async def note(self, ctx: ActorContext[Any], payload: str) -> None:
        await ctx.kv_set(b"note", payload.encode())


class V1(_Base):
    state_type = AccountV1


@dataclass
class AccountV2:
    cents: int = 0
    owner: str = ""


class V2(_Base):
    state_type = AccountV2
    state_version: ClassVar[int] = 2

    @classmethod
    def migrate_state(cls, from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        assert from_version == 1
        return {"cents": data.pop("balance") * 100, **data}


class V3(_Base):
    state_type = AccountV3
    state_version: ClassVar[int] = 3
    steps: ClassVar[list[int]] = []

    @classmethod
    def migrate_state(cls, from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        cls.steps.append(from_version)
        if from_version == 1:
            return V2.migrate_state(1, data)
        # 2 -> 3: owner (a str) becomes a nested Holder; the result may hold real types.
        since = datetime(2024, 1, 1, tzinfo=UTC)
        return {"cents": data["cents"], "holder": Holder(data.pop("owner"), since)}


def _runtime(storage: Storage, cls: type[Actor[Any]], node_id: str | None = None) -> Runtime:
    runtime = Runtime(storage, node_id=node_id)
    runtime.register("acct", cls)
    return runtime


async def _record(storage: Storage) -> StateRecord:
    raw = await storage.get(ALICE, STATE_KEY)
    assert raw is not None
    return StateRecord.decode(raw, "test")


@BACKENDS
async def test_a_chain_from_one_to_three_applies_on_load_and_persists(storage: Storage) -> None:
    async with _runtime(storage, V1) as runtime:
        await runtime.invoke(ALICE, "put", {"balance": 7, "owner": "alice"})
    assert (await _record(storage)).state_version == 1
    V3.steps.clear()
    expected = {
        "cents": 700,
        "holder": {"name": "alice", "since": "2024-01-01T00:00:00Z"},
        "notes": [],
    }
    async with _runtime(storage, V3) as runtime:
        assert await runtime.invoke(ALICE, "get") == expected
    assert V3.steps == [1, 2]
    record = await _record(storage)
    assert record.state_version == 3  # the first invocation wrote it, read-only as it was
    assert record.seq == 2
    async with _runtime(storage, V3) as runtime:
        assert await runtime.invoke(ALICE, "get") == expected
    assert V3.steps == [1, 2]  # not migrated again


@BACKENDS
async def test_a_record_newer_than_the_class_is_refused_and_left_byte_identical(
    storage: Storage,
) -> None:
    async with _runtime(storage, V1) as runtime:
        await runtime.invoke(ALICE, "put", {"balance": 7, "owner": "alice"})
    async with _runtime(storage, V3) as runtime:
        await runtime.invoke(ALICE, "get")
        await runtime.invoke(ALICE, "note", "v3 was here")
    before = {key: await storage.get(ALICE, key) for key in await storage.list_keys(ALICE)}
    for old in (V1, V2):
        async with _runtime(storage, old) as runtime:
            for operation, payload in (("get", None), ("put", {"owner": "x"}), ("note", "x")):
                with pytest.raises(StateVersionTooNewError, match="state version 3") as caught:
                    await runtime.invoke(ALICE, operation, payload, idempotency_key="k")
                assert isinstance(caught.value, CorruptStateError)
                assert "acct/alice" in str(caught.value)
    after = {key: await storage.get(ALICE, key) for key in await storage.list_keys(ALICE)}
    assert after == before


@BACKENDS
async def test_another_nodes_live_lease_comes_before_a_too_new_record(storage: Storage) -> None:
    newer = _runtime(storage, V3, node_id="node-new")
    await newer.invoke(ALICE, "get")  # node-new holds the lease on a version-3 record
    before = await storage.get(ALICE, STATE_KEY)
    async with _runtime(storage, V2, node_id="node-old") as older:
        with pytest.raises(ActorActiveElsewhereError) as caught:
            await older.invoke(ALICE, "get")
        assert caught.value.owner == "node-new"
    assert await storage.get(ALICE, STATE_KEY) == before
    await newer.close()
    async with _runtime(storage, V2, node_id="node-old") as older:
        with pytest.raises(StateVersionTooNewError):
            await older.invoke(ALICE, "get")  # the lease was released: now the version speaks
    after = await storage.get(ALICE, STATE_KEY)
    assert after is not None
    assert StateRecord.decode(after, "t").owner == ""


@dataclass
class Renamed:
    amount: int = 0
    owner: str = ""


class RenamedWithoutMigration(_Base):
    state_type = Renamed


@dataclass
class Retyped:
    balance: str = ""
    owner: str = ""


class RetypedWithoutMigration(_Base):
    state_type = Retyped


@dataclass
class Fewer:
    owner: str = ""


class RemovedWithoutMigration(_Base):
    state_type = Fewer


@dataclass
class NeedsCurrency:
    balance: int
    owner: str
    currency: str


class NewRequiredField(_Base):
    state_type = NeedsCurrency


class NewRequiredFieldMigrated(_Base):
    state_type = NeedsCurrency
    state_version: ClassVar[int] = 2

    @classmethod
    def migrate_state(cls, from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}


@dataclass
class WithDefault:
    balance: int = 0
    owner: str = ""
    currency: str = "EUR"


class NewFieldWithDefault(_Base):
    state_type = WithDefault


@BACKENDS
@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (RenamedWithoutMigration, r"balance: unknown field"),
        (RetypedWithoutMigration, r"balance: expected str, got int"),
        (RemovedWithoutMigration, r"balance: unknown field"),
        (NewRequiredField, r"currency: missing, and the field has no default"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
async def test_a_bad_evolution_is_a_named_error_and_writes_nothing(
    storage: Storage, cls: type[Actor[Any]], message: str
) -> None:
    async with _runtime(storage, V1) as runtime:
        await runtime.invoke(ALICE, "put", {"balance": 7, "owner": "alice"})
    before = await storage.get(ALICE, STATE_KEY)
    async with _runtime(storage, cls) as runtime:
        with pytest.raises(CorruptStateError, match=message) as caught:
            await runtime.invoke(ALICE, "put", {"owner": "bob"})
        assert "actor acct/alice" in str(caught.value)
    assert await storage.get(ALICE, STATE_KEY) == before


@BACKENDS
async def test_missing_fields_take_defaults_or_come_from_migrate_state(storage: Storage) -> None:
    async with _runtime(storage, V1) as runtime:
        await runtime.invoke(ALICE, "put", {"balance": 7, "owner": "alice"})
    async with _runtime(storage, NewFieldWithDefault) as runtime:
        assert await runtime.invoke(ALICE, "get") == {
            "balance": 7,
            "owner": "alice",
            "currency": "EUR",
        }
    async with _runtime(storage, NewRequiredFieldMigrated) as runtime:
        assert await runtime.invoke(ALICE, "get") == {
            "balance": 7,
            "owner": "alice",
            "currency": "EUR",
        }


class BrokenMigration(_Base):
    state_type = AccountV2
    state_version: ClassVar[int] = 2

    @classmethod
    def migrate_state(cls, from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("cents")


class NotADict(_Base):
    state_type = AccountV2
    state_version: ClassVar[int] = 2

    @classmethod
    def migrate_state(cls, from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        return [data]  # type: ignore[return-value]  # the point of the test


class ForgotToRename(_Base):
    state_type = AccountV2
    state_version: ClassVar[int] = 2  # the default migrate_state keeps "balance"


@BACKENDS
@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (BrokenMigration, r"BrokenMigration\.migrate_state\(1, \.\.\.\) failed .*KeyError"),
        (NotADict, r"returned list"),
        (ForgotToRename, r"migrated from state version 1 to 2.*balance: unknown field"),
    ],
    ids=["raises", "not-a-dict", "unknown-after-migration"],
)
async def test_a_failing_migration_is_a_corrupt_state_error_and_writes_nothing(
    storage: Storage, cls: type[Actor[Any]], message: str
) -> None:
    async with _runtime(storage, V1) as runtime:
        await runtime.invoke(ALICE, "put", {"balance": 7, "owner": "alice"})
    before = await storage.get(ALICE, STATE_KEY)
    async with _runtime(storage, cls) as runtime:
        with pytest.raises(CorruptStateError, match=message):
            await runtime.invoke(ALICE, "get")
    assert await storage.get(ALICE, STATE_KEY) == before


class DictV2(Actor[dict[str, Any]]):
    state_type = dict
    state_version: ClassVar[int] = 2

    @classmethod
    def migrate_state(cls, from_version: int, data: dict[str, Any]) -> dict[str, Any]:
        return {"items": sorted(data)}

    async def get(self, ctx: ActorContext[dict[str, Any]], payload: Any) -> dict[str, Any]:
        return ctx.state


class DictV1(Actor[dict[str, Any]]):
    state_type = dict

    async def put(self, ctx: ActorContext[dict[str, Any]], payload: str) -> None:
        ctx.state[payload] = True


@BACKENDS
async def test_dict_states_migrate_too(storage: Storage) -> None:
    async with _runtime(storage, DictV1) as runtime:
        await runtime.invoke(ALICE, "put", "b")
        await runtime.invoke(ALICE, "put", "a")
    async with _runtime(storage, DictV2) as runtime:
        assert await runtime.invoke(ALICE, "get") == {"items": ["a", "b"]}
    assert (await _record(storage)).state_version == 2


@pytest.mark.parametrize("version", [0, -1, "2", 2.0, True, 2**32])
async def test_a_bad_state_version_is_a_config_error(version: Any, storage: Storage) -> None:
    cls = type("Bad", (V1,), {"state_version": version})
    async with _runtime(storage, cls) as runtime:
        with pytest.raises(ConfigError, match="state_version"):
            await runtime.invoke(ALICE, "get")
