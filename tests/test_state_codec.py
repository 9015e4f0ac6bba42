"""The typed state codec (issue 14): every listed type round-trips, decoding validates.

Runtime tests go through ``Runtime.invoke`` on memory://, LMDB and Redis and read
the state back from storage in a fresh runtime; codec tests call ``JsonCodec``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

import pytest

from kelpie import (
    Actor,
    ActorContext,
    ActorId,
    CorruptStateError,
    JsonCodec,
    Runtime,
    SerializationError,
    Storage,
)
from kelpie.actor.codec import StateRecord, pack_record
from kelpie.actor.keys import STATE_KEY
from kelpie.testing.plugin import Reopen

BACKENDS = pytest.mark.parametrize("storage_backend", ["memory", "lmdb", "redis"], indirect=True)
PLUS_TWO = timezone(timedelta(hours=2))


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass(frozen=True)
class Tag:
    name: str
    weight: int = 1


@dataclass
class Owner:
    name: str
    since: datetime
    tags: list[Tag] = field(default_factory=list)


@dataclass
class Everything:
    owner: Owner | None = None
    owners: list[Owner] = field(default_factory=list)
    by_name: dict[str, Owner] = field(default_factory=dict)
    by_number: dict[int, str] = field(default_factory=dict)
    pair: tuple[int, str] = (0, "")
    many: tuple[Tag, ...] = ()
    tag_set: set[Tag] = field(default_factory=set)
    frozen: frozenset[str] = frozenset()
    colour: Colour = Colour.RED
    level: Level = Level.LOW
    when: datetime = datetime(2000, 1, 1)
    aware: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    day: date = date(2000, 1, 1)
    at: time = time(0, 0)
    at_aware: time = time(0, 0, tzinfo=UTC)
    ident: uuid.UUID = uuid.UUID(int=0)  # noqa: RUF009 - immutable
    amount: Decimal = Decimal("0")
    blob: bytes = b""
    mode: Literal["open", "closed"] = "open"
    number_or_text: int | str = 0
    maybe: float | None = None
    big: int = 0
    ratio: float = 0.0


def full() -> Everything:
    since = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=PLUS_TWO)
    return Everything(
        owner=Owner("zoë", since, [Tag("a"), Tag("b", 2)]),
        owners=[Owner("x", since), Owner("y", since.astimezone(UTC))],
        by_name={"é": Owner("é", since)},
        by_number={3: "three", -1: "minus"},
        pair=(7, "seven"),
        many=(Tag("m"), Tag("n", 5)),
        tag_set={Tag("s"), Tag("t")},
        frozen=frozenset({"p", "q"}),
        colour=Colour.BLUE,
        level=Level.HIGH,
        when=datetime(2023, 1, 2, 3, 4, 5),
        aware=since,
        day=date(1999, 12, 31),
        at=time(23, 59, 58, 1),
        at_aware=time(1, 2, 3, tzinfo=PLUS_TWO),
        ident=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        amount=Decimal("12345678901234567890.000000001"),
        blob=bytes(range(256)),
        mode="closed",
        number_or_text="text",
        maybe=-0.5,
        big=2**100,
        ratio=1e-300,
    )


class Keeper(Actor[Everything]):
    state_type = Everything

    async def store(self, ctx: ActorContext[Everything], payload: Any) -> None:
        ctx.state = full()

    async def bad(self, ctx: ActorContext[Everything], payload: Any) -> None:
        ctx.state.big = payload

    async def nan(self, ctx: ActorContext[Everything], payload: Any) -> None:
        ctx.state.maybe = math.nan

    async def same(self, ctx: ActorContext[Everything], payload: Any) -> bool:
        return ctx.state == full()

    async def aware(self, ctx: ActorContext[Everything], payload: Any) -> list[Any]:
        state = ctx.state
        assert state.owner is not None
        return [
            state.aware.utcoffset() == timedelta(hours=2),
            state.owner.since.tzinfo is not None,
            state.when.tzinfo is None,
            state.at_aware.utcoffset() == timedelta(hours=2),
            type(state.pair).__name__,
            type(state.tag_set).__name__,
            type(state.frozen).__name__,
            type(state.owners[0]).__name__,
            type(state.colour).__name__,
            type(state.level).__name__,
        ]


class Notes(Actor[dict[str, Any]]):
    state_type = dict

    async def put(self, ctx: ActorContext[dict[str, Any]], payload: Any) -> int:
        ctx.state[payload["k"]] = payload["v"]
        return len(ctx.state)

    async def get(self, ctx: ActorContext[dict[str, Any]], payload: Any) -> dict[str, Any]:
        return ctx.state


def _runtime(storage: Storage) -> Runtime:
    runtime = Runtime(storage)
    runtime.register("keep", Keeper)
    runtime.register("notes", Notes)
    return runtime


KEEP = ActorId("keep", "k1")


@BACKENDS
async def test_every_listed_type_round_trips_through_storage(
    storage: Storage, open_storage_again: Reopen
) -> None:
    async with _runtime(storage) as runtime:
        await runtime.invoke(KEEP, "store")
        assert await runtime.invoke(KEEP, "same") is True
    again = await open_storage_again()
    async with _runtime(again) as runtime:
        assert await runtime.invoke(KEEP, "same") is True
        assert await runtime.invoke(KEEP, "aware") == [
            True,
            True,
            True,
            True,
            "tuple",
            "set",
            "frozenset",
            "Owner",
            "Colour",
            "Level",
        ]


@BACKENDS
async def test_a_dict_state_keeps_working(storage: Storage, open_storage_again: Reopen) -> None:
    notes = ActorId("notes", "n1")
    async with _runtime(storage) as runtime:
        await runtime.invoke(notes, "put", {"k": "a", "v": {"deep": [1, 2.5, None, "é"]}})
        await runtime.invoke(notes, "put", {"k": "big", "v": 2**80})
    async with _runtime(await open_storage_again()) as runtime:
        assert await runtime.invoke(notes, "get") == {
            "a": {"deep": [1, 2.5, None, "é"]},
            "big": 2**80,
        }


@BACKENDS
async def test_a_handler_that_mistypes_a_field_stores_nothing(storage: Storage) -> None:
    async with _runtime(storage) as runtime:
        await runtime.invoke(KEEP, "store")
        before = await storage.get(KEEP, STATE_KEY)
        with pytest.raises(SerializationError, match=r"big: expected int, got str"):
            await runtime.invoke(KEEP, "bad", "not a number")
        with pytest.raises(SerializationError, match="NaN or an infinity"):
            await runtime.invoke(KEEP, "nan")
        assert await storage.get(KEEP, STATE_KEY) == before
        assert await runtime.invoke(KEEP, "same") is True


async def _store_payload(storage: Storage, actor: ActorId, payload: bytes) -> bytes:
    record = pack_record(1, 0, "json", payload, "")
    await storage.set(actor, STATE_KEY, record)
    return record


@BACKENDS
@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            b'{"owner":{"name":"a","since":5}}',
            r"owner\.since: expected datetime, got int",
        ),
        (
            b'{"owners":[{"name":"a","since":"2020-01-01T00:00:00"},{"name":1}]}',
            r"owners\[1\]\.name: expected str, got int",
        ),
        (b'{"colour":"green"}', r"colour: invalid enum value 'green'"),
        (b'{"mode":"ajar"}', r"mode: invalid enum value 'ajar'"),
        (b'{"owner":{"name":"a"}}', r"owner\.since: missing, and the field has no default"),
        (b'{"surplus":1}', r"surplus: unknown field"),
        (
            b'{"owner":{"name":"a","since":"2020-01-01T00:00:00","extra":[]}}',
            r"owner\.extra: unknown field",
        ),
        (b'{"big":1.5}', r"big: expected int, got float"),
        (b'{"blob":"@@@"}', r"blob: invalid base64"),
        (b"[1,2]", r"\(the state\): expected object, got array"),
        (b"{not json", r"not JSON"),
    ],
)
async def test_a_stored_value_of_the_wrong_shape_is_a_corrupt_state_error_naming_the_path(
    storage: Storage, payload: bytes, message: str
) -> None:
    record = await _store_payload(storage, KEEP, payload)
    async with _runtime(storage) as runtime:
        with pytest.raises(CorruptStateError, match=message) as caught:
            await runtime.invoke(KEEP, "same")
        assert "actor keep/k1" in str(caught.value)
    assert await storage.get(KEEP, STATE_KEY) == record


@dataclass
class Small:
    n: int = 0
    name: str = ""


def test_a_flat_state_is_written_as_before_field_order_aside() -> None:
    codec = JsonCodec()
    assert codec.encode(Small(3, "x")) == b'{"n":3,"name":"x"}'
    assert codec.decode(b'{"name":"x","n":3}', Small) == Small(3, "x")  # 0.1.0's sorted keys
    assert codec.decode(b"{}", Small) == Small()


def test_a_state_record_at_version_one_is_the_old_layout() -> None:
    old = StateRecord(5, 2, "json", b"{}", "node").encode()
    assert old[3] == 1
    newer = StateRecord(5, 2, "json", b"{}", "node", state_version=7)
    assert newer.encode()[3] == 2
    assert StateRecord.decode(newer.encode(), "x") == newer
    assert StateRecord.decode(old, "x").state_version == 1


@dataclass
class TwoObjects:
    value: Small | Tag | None = None


def test_a_state_type_the_codec_cannot_hold_is_named() -> None:
    with pytest.raises(SerializationError, match="state type TwoObjects is not supported"):
        JsonCodec().encode(TwoObjects())


def test_state_that_is_neither_dataclass_nor_dict_is_refused() -> None:
    with pytest.raises(SerializationError):
        JsonCodec().encode([1, 2])
    assert dataclasses.is_dataclass(Small)


@dataclass
class Node:
    children: list[Node] = field(default_factory=list)


@dataclass(slots=True)
class Slotted:
    n: int = 0
    tags: frozenset[str] = frozenset()


def test_a_recursive_state_type_is_refused_by_name() -> None:
    with pytest.raises(SerializationError, match="Node contains itself"):
        JsonCodec().encode(Node())


def test_a_slots_dataclass_round_trips_with_defaults_filled_in() -> None:
    codec = JsonCodec()
    decoded = codec.decode(b'{"n":2}', Slotted)
    assert decoded == Slotted(2)
    assert codec.encode(decoded) == b'{"n":2,"tags":[]}'
