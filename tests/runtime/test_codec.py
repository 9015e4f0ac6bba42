"""The JSON encoding of payloads, results and state, and the state record envelope."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from kelpie.actor.codec import JsonCodec, StateRecord, encode_json, pack_record
from kelpie.errors import SerializationError


@pytest.mark.parametrize(
    "value",
    [
        None,
        0,
        -7,
        2**80,
        1.5,
        True,
        "plain",
        'quote " and \\ and é and \U0001f600',
        "",
        "controls \n\t\x00\x1f\x7f and separators \u2028\u2029",
        [1, "x", None, [], {}],
        {"b": 1, "a": {"z": [1.25, False]}, "é": "ü"},
        (1, 2),
    ],
)
def test_encoding_is_compact_sorted_utf8_json(value: Any) -> None:
    expected = json.dumps(
        value, separators=(",", ":"), sort_keys=True, allow_nan=False, ensure_ascii=False
    ).encode("utf-8")
    assert encode_json(value, "payload") == expected


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        {"x": -float("inf")},
        {1, 2},
        b"bytes",
        {"a": object()},
        "lone surrogate \ud800",
    ],
)
def test_what_json_cannot_hold_is_a_serialization_error(value: Any) -> None:
    with pytest.raises(SerializationError, match="payload cannot be encoded as JSON"):
        encode_json(value, "payload")


def test_a_cycle_is_a_serialization_error() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(SerializationError):
        encode_json({"loop": cycle}, "state")


def test_mixed_key_types_that_cannot_be_sorted_are_a_serialization_error() -> None:
    with pytest.raises(SerializationError):
        encode_json({1: "a", "b": 2}, "result")


@dataclass
class _State:
    count: int = 0
    name: str = ""


def test_a_dataclass_state_round_trips() -> None:
    codec = JsonCodec()
    data = codec.encode(_State(3, "x"))
    assert data == b'{"count":3,"name":"x"}'
    assert codec.decode(data, _State) == _State(3, "x")


def test_pack_record_is_the_state_record_encoding() -> None:
    record = StateRecord(5, 2, "json", b'{"n":1}', "node-é")
    packed = pack_record(5, 2, "json", b'{"n":1}', "node-é")
    assert packed == record.encode()
    assert StateRecord.decode(packed, "actor x") == record
