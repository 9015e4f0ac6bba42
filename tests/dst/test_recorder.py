"""HistoryRecorder: recording calls, freezing payloads, replays, and violation messages."""

from __future__ import annotations

from kelpie.dst.linearizability import UNKNOWN, Model
from kelpie.dst.recorder import HistoryRecorder, ReplayMismatch, freeze
from kelpie.dst.workloads.models import LedgerModel, RegisterModel
from kelpie.dst.workloads.registers import RegisterFailure
from kelpie.identity import ActorId

REG = ActorId("register", "r0")
ACCT = ActorId("ledger", "a0")
MODELS: dict[str, Model] = {"register": RegisterModel(), "ledger": LedgerModel()}


def test_freeze_makes_json_like_values_hashable() -> None:
    value = {"b": [1, {"y": None, "x": [True, 2.5]}], "a": "s", "c": {"k": b"x"}}
    frozen = freeze(value)
    assert frozen == (
        ("a", "s"),
        ("b", (1, (("x", (True, 2.5)), ("y", None)))),
        ("c", (("k", b"x"),)),
    )
    hash(frozen)
    assert freeze([1, [2, 3]]) == freeze((1, (2, 3)))  # a replayed tuple comes back a list
    assert freeze({"b": 1, "a": 2}) == freeze({"a": 2, "b": 1})
    assert freeze({1, 2}) == frozenset({1, 2})
    assert freeze({1: "a", "b": 2}) is not None  # keys of mixed types still freeze
    assert freeze(None) is None


def test_calls_become_ops_per_actor_with_model_inputs() -> None:
    rec = HistoryRecorder()
    w = rec.begin(REG, "write", {"id": "r1.1", "v": 7}, 1, 0.0, key="r1.1")
    p = rec.begin(REG, "peek", {"id": "r2.1", "delay": 0.01}, 2, 0.5)
    f = rec.begin(REG, "fail", {"id": "r3.1", "v": 9}, 3, 0.6)
    a = rec.begin(ACCT, "apply", {"op": "c1.1", "delta": 5}, 1, 0.7, key="c1.1")
    other = rec.begin(ActorId("bank", "x"), "deposit", {"amount": 1}, 1, 0.8)
    rec.ok(w, [0, None, 0], 1.0)
    rec.ok(p, [7, 7, 1], 1.5)
    rec.rejected(f, RegisterFailure("boom"), 1.2)
    rec.unknown(a)
    rec.ok(other, 1, 0.9)
    assert rec.operations == 5

    parts = rec.partitions(MODELS)
    assert set(parts) == {REG, ACCT}  # no model for "bank": not checked
    write, peek, fail = parts[REG]
    assert (write.input, write.output, write.call, write.ret, write.client) == (
        ("write", 7),
        (0, None, 0),
        0.0,
        1.0,
        1,
    )
    assert (peek.input, peek.output) == (("peek",), (7, 7, 1))
    assert (fail.input, fail.output) == (("fail",), ("error", "RegisterFailure"))
    [apply] = parts[ACCT]
    assert (apply.input, apply.ret, apply.output) == (("apply", "c1.1", 5), None, UNKNOWN)
    assert [op.id for op in parts[REG]] == [0, 1, 2]
    assert rec.check(MODELS) == []
    assert rec.exhausted == 0


def test_a_result_mutated_after_the_call_is_recorded_as_returned() -> None:
    rec = HistoryRecorder()
    result = [0, None, 0]
    handle = rec.begin(REG, "write", {"id": "x", "v": 1}, 0, 0.0)
    rec.ok(handle, result, 1.0)
    result[0] = 99
    assert rec.partitions(MODELS)[REG][0].output == (0, None, 0)


def test_a_torn_peek_is_reported_with_its_slice() -> None:
    rec = HistoryRecorder()
    for n, (v, start, end) in enumerate([(1, 0.0, 1.0), (2, 2.0, 3.0)]):
        handle = rec.begin(REG, "write", {"id": f"w{n}", "v": v}, 1, start, key=f"w{n}")
        rec.ok(handle, [0, None, 0] if v == 1 else [1, 1, 1], end)
    # Before the second write: state 1 and KV 2 never existed together.
    torn = rec.begin(REG, "peek", {"id": "p", "delay": 0.2}, 2, 1.5)
    rec.ok(torn, [1, 2, 1], 3.5)
    quiet = rec.begin(REG, "list", {"id": "l", "prefix": "k/"}, 3, 4.0)
    rec.ok(quiet, [], 4.5)
    messages = rec.check(MODELS)
    print(messages[0])
    assert len(messages) == 1
    text = messages[0]
    assert text.startswith("register/r0: history not linearizable")
    assert "peek -> (value, kv v, writes) (1, 2, 1)" in text
    assert "list" not in text  # the irrelevant call is not in the slice


def test_a_stale_peek_is_reported_with_the_write_it_missed() -> None:
    rec = HistoryRecorder()
    for n, (v, start, end) in enumerate([(1, 0.0, 1.0), (2, 2.0, 3.0)]):
        handle = rec.begin(REG, "write", {"id": f"w{n}", "v": v}, 1, start, key=f"w{n}")
        rec.ok(handle, [0, None, 0] if v == 1 else [1, 1, 1], end)
    stale = rec.begin(REG, "peek", {"id": "p", "delay": 0}, 2, 4.0)
    rec.ok(stale, [1, 1, 1], 4.5)  # called after the second write returned
    [text] = rec.check(MODELS)
    print(text)
    assert "peek -> (value, kv v, writes) (1, 1, 1)" in text
    assert "write 2" in text  # the write it missed is part of the slice


def test_ledger_model_rejects_only_what_would_go_negative() -> None:
    rec = HistoryRecorder()
    ops = [
        ({"op": "a", "delta": 10}, 10),
        ({"op": "b", "delta": -30}, "InsufficientFundsError"),
        ({"op": "c", "delta": -10}, 0),
    ]
    for n, (payload, result) in enumerate(ops):
        handle = rec.begin(ACCT, "apply", payload, 0, float(n), key=str(payload["op"]))
        if isinstance(result, str):
            rec.rejected(handle, type(result, (Exception,), {})(), n + 0.5)
        else:
            rec.ok(handle, result, n + 0.5)
    assert rec.check(MODELS) == []

    bad = rec.begin(ACCT, "balance", None, 0, 10.0)
    rec.ok(bad, 5, 11.0)
    [message] = rec.check(MODELS)
    print(message)
    assert "ledger/a0" in message and "balance" in message


def test_replays_after_an_ok_original_must_return_the_first_result() -> None:
    rec = HistoryRecorder()
    first = rec.begin(REG, "write", {"id": "w", "v": 5}, 0, 0.0, key="w")
    rec.ok(first, [0, None, 0], 1.0)
    peek = rec.begin(REG, "peek", {"id": "p", "delay": 0}, 0, 2.0)
    rec.ok(peek, [5, 5, 1], 2.5)
    same = rec.begin(REG, "write", {"id": "w", "v": 5}, 0, 3.0, key="w")
    rec.ok(same, [0, None, 0], 3.5)  # remembered: the first result, no second write
    lost = rec.begin(REG, "write", {"id": "w", "v": 5}, 0, 4.0, key="w")
    rec.unknown(lost)
    assert [op.input for op in rec.partitions(MODELS)[REG]] == [("write", 5), ("peek",)]
    assert rec.check(MODELS) == []

    again = rec.begin(REG, "write", {"id": "w", "v": 5}, 0, 5.0, key="w")
    rec.ok(again, [5, 5, 1], 5.5)  # applied a second time: a different answer
    ops = rec.partitions(MODELS)[REG]
    assert isinstance(ops[-1].input, ReplayMismatch)
    [message] = rec.check(MODELS)
    print(message)
    assert "REPLAY of write 5" in message and "(5, 5, 1)" in message


def test_a_replay_after_an_unknown_original_is_one_application() -> None:
    rec = HistoryRecorder()
    lost = rec.begin(REG, "write", {"id": "w", "v": 5}, 0, 0.0, key="w")
    rec.unknown(lost)
    peek = rec.begin(REG, "peek", {"id": "p", "delay": 0}, 1, 1.0)
    rec.ok(peek, [5, 5, 1], 1.5)  # the first attempt had landed
    retry = rec.begin(REG, "write", {"id": "w", "v": 5}, 0, 2.0, key="w")
    rec.ok(retry, [0, None, 0], 2.5)  # ... and the retry returns its stored result
    [write, seen] = rec.partitions(MODELS)[REG]
    assert (write.call, write.ret, write.output) == (0.0, 2.5, (0, None, 0))
    assert seen.input == ("peek",)
    assert rec.check(MODELS) == []


def test_a_rejected_original_is_replayed_afresh() -> None:
    rec = HistoryRecorder()
    failed = rec.begin(REG, "fail", {"id": "f", "v": 5}, 0, 0.0, key="f")
    rec.rejected(failed, RegisterFailure(), 1.0)
    again = rec.begin(REG, "fail", {"id": "f", "v": 5}, 0, 2.0, key="f")
    rec.rejected(again, RegisterFailure(), 3.0)
    assert len(rec.partitions(MODELS)[REG]) == 2
    assert rec.check(MODELS) == []


def test_an_exhausted_search_is_counted_not_reported() -> None:
    rec = HistoryRecorder(budget=2)
    for n in range(6):
        handle = rec.begin(REG, "write", {"id": f"w{n}", "v": n + 1}, n, 0.0)
        rec.unknown(handle)
    peek = rec.begin(REG, "peek", {"id": "p", "delay": 0}, 9, 1.0)
    rec.ok(peek, [6, 6, 6], 2.0)
    assert rec.check(MODELS) == []
    assert rec.exhausted == 1
    assert HistoryRecorder().check(MODELS) == []  # an empty history
