"""Seeded streams: derived by hashing, so neighbouring seeds and names never share one."""

from __future__ import annotations

import random

import pytest

from kelpie.dst.rng import SimRandom, derive_seed, stream


def draws(rng: random.Random, n: int = 8) -> list[float]:
    return [rng.random() for _ in range(n)]


def test_same_seed_and_name_give_the_same_stream() -> None:
    assert draws(stream(7, "x")) == draws(stream(7, "x"))


def test_seed_n_and_n_plus_1_share_no_stream() -> None:
    for seed in range(50):
        print(f"seed {seed}")
        assert draws(stream(seed, "x")) != draws(stream(seed + 1, "x"))
        # The flaw of Random(seed + k): seed N's stream k+1 == seed N+1's stream k.
        assert derive_seed(seed, "x") != derive_seed(seed + 1, "x")
        assert draws(stream(seed, "client/1")) != draws(stream(seed + 1, "client/0"))


def test_streams_of_one_seed_are_independent_and_do_not_shift() -> None:
    alone = SimRandom(3)
    expected = draws(alone.stream("b"))
    busy = SimRandom(3)
    draws(busy.stream("a"), 1000)  # heavy use of another stream...
    assert draws(busy.stream("b")) == expected  # ...does not shift this one
    assert draws(SimRandom(3).stream("a")) != expected


def test_a_named_stream_is_shared_and_continues() -> None:
    root = SimRandom(11)
    first = root.stream("faults").random()
    second = root.stream("faults").random()
    fresh = stream(11, "/faults")
    assert [first, second] == [fresh.random(), fresh.random()]


def test_forked_roots_are_independent() -> None:
    root = SimRandom(5)
    assert draws(root.fork("p1").stream("x")) != draws(root.fork("p2").stream("x"))
    assert draws(root.fork("p1").stream("x")) != draws(root.stream("x"))


def test_seed_must_be_an_int() -> None:
    with pytest.raises(TypeError):
        stream("1", "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SimRandom(True)
