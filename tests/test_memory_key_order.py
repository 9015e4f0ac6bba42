"""The memory backend's key listings against a model, whatever order writes and listings come in.

``memory://`` puts an actor's keys in order when a listing needs them, from
what commits noted as added or removed since the last listing (ADR 0022).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kelpie.storage.memory import _ActorRecords

_keys = st.sampled_from([b"a", b"ab", b"b", b"o1", b"o2", b"o3", b"p", b"pq", b"z"])
_step = st.one_of(
    st.tuples(st.just("write"), st.dictionaries(_keys, st.one_of(st.none(), st.just(b"v")))),
    st.tuples(st.just("list"), st.sampled_from([b"", b"a", b"o", b"p", b"q"])),
)


@settings(max_examples=400, deadline=None, database=None)
@given(steps=st.lists(_step, max_size=40))
def test_listings_match_the_stored_keys_in_order(steps: list[tuple[str, object]]) -> None:
    records = _ActorRecords()
    model: dict[bytes, bytes] = {}
    for kind, arg in steps:
        if kind == "write":
            assert isinstance(arg, dict)
            records.apply(arg)
            for key, value in arg.items():
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = value
        else:
            assert isinstance(arg, bytes)
            expected = sorted(key for key in model if key.startswith(arg))
            assert records.keys_with_prefix(arg) == expected
        assert records.values == model
    assert records.sorted_keys() == sorted(model)


def test_changes_that_outgrow_the_last_listing_drop_the_order_until_the_next_one() -> None:
    records = _ActorRecords()
    records.apply({b"k%03d" % n: b"v" for n in range(10)})
    assert records.keys_with_prefix(b"k") == [b"k%03d" % n for n in range(10)]
    records.apply({b"k000": None, b"o1": b"v"})  # two changes on ten listed keys: noted
    assert (records.added, records.removed) == ({b"o1"}, {b"k000"})
    # An outbox entry that comes and goes nine more times, and nine new keys: more changes
    # than the listing held, so the records stop noting them (no set grows per commit).
    for n in range(9):
        records.apply({b"o%d" % (n + 2): b"v", b"o%d" % (n + 1): None, b"p%d" % n: b"v"})
    assert records.listed is None
    assert not records.added and not records.removed
    expected = sorted(
        [b"k%03d" % n for n in range(1, 10)] + [b"o10"] + [b"p%d" % n for n in range(9)]
    )
    assert records.sorted_keys() == expected
    assert records.listed == expected  # listed again: commits note their changes from here
    records.apply({b"p0": None})
    assert records.removed == {b"p0"}
    assert records.keys_with_prefix(b"p") == [b"p%d" % n for n in range(1, 9)]
