"""State encode + decode time: the typed codec (issue 14) against 0.1.0's JSON codec.

    python benchmarks/state_codec.py [--rounds N]

The state has 12 fields: scalars, an optional, a list and a dict of ints, a
nested dataclass and a list of 100 small dataclasses. The typed codec
(``kelpie.actor.codec.JsonCodec``) encodes it with its checks (every field's
type, no NaN) and decodes it with validation and the unknown-field check, into
the real nested dataclasses. The 0.1.0 codec (a verbatim copy below, as
released) cannot hold nested dataclasses at all: it gets the same data with the
nested values as plain dicts, the best an application could do with it, and
decodes them as dicts without any check. Each figure is the best of ``--rounds`` (12)
rounds of 2,000 encode+decode pairs (the best, because this machine is shared);
the ratio is old time / new time (target: at least 2, never below 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kelpie.actor.codec import JsonCodec


@dataclass
class Owner:
    name: str = ""
    since: int = 0


@dataclass
class Item:
    sku: str = ""
    qty: int = 0
    price: float = 0.0


@dataclass
class State:
    balance: int = 0
    name: str = ""
    rate: float = 0.0
    active: bool = False
    parent: int | None = None
    region: str = ""
    version: int = 0
    history: list[int] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)
    note: str = ""
    owner: Owner = field(default_factory=Owner)
    items: list[Item] = field(default_factory=list)


@dataclass
class FlatState:
    """``State`` as 0.1.0 could store it: nested values as plain dicts."""

    balance: int = 0
    name: str = ""
    rate: float = 0.0
    active: bool = False
    parent: int | None = None
    region: str = ""
    version: int = 0
    history: list[int] = field(default_factory=list)
    limits: dict[str, int] = field(default_factory=dict)
    note: str = ""
    owner: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)


class OldJsonCodec:
    """kelpie 0.1.0's ``JsonCodec`` (kelpie/actor/codec.py at af40658), verbatim in effect."""

    name = "json"
    _names: dict[type, tuple[str, ...]] = {}

    def __init__(self) -> None:
        encoder = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
            None, self._fail, json.encoder.encode_basestring, None, ":", ",", True, False, False
        )
        self._chunks = encoder

    @staticmethod
    def _fail(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    def encode(self, state: Any) -> bytes:
        names = self._names.get(type(state))
        if names is None:
            names = self._names[type(state)] = tuple(f.name for f in dataclasses.fields(state))
        value = {name: getattr(state, name) for name in names}
        return "".join(self._chunks(value, 0)).encode("utf-8")

    def decode(self, data: bytes, state_type: type[Any]) -> Any:
        value = json.loads(data)
        if not isinstance(value, dict):
            raise ValueError("stored state is not a JSON object")
        return state_type(**value)


def sample() -> State:
    return State(
        balance=1_000_000,
        name="account-42",
        rate=0.0375,
        active=True,
        parent=None,
        region="eu-west",
        version=7,
        history=list(range(20)),
        limits={"daily": 500, "monthly": 10_000},
        note="a note of modest length",
        owner=Owner("Zoë", 1_700_000_000),
        items=[Item(f"sku-{i}", i, i * 1.25) for i in range(100)],
    )


def best_of(rounds: int, pairs: int, work: Callable[[], object]) -> float:
    """Best seconds per call over ``rounds`` rounds of ``pairs`` calls."""
    work()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(pairs):
            work()
        best = min(best, (time.perf_counter() - start) / pairs)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args(argv)
    pairs = 2_000

    new, old = JsonCodec(), OldJsonCodec()
    state = sample()
    flat = FlatState(**dataclasses.asdict(state))
    new_bytes, old_bytes = new.encode(state), old.encode(flat)
    assert new.decode(new_bytes, State) == state
    assert old.decode(old_bytes, FlatState) == flat

    figures = {
        "typed (msgspec)": (
            best_of(args.rounds, pairs, lambda: new.encode(state)),
            best_of(args.rounds, pairs, lambda: new.decode(new_bytes, State)),
            len(new_bytes),
        ),
        "0.1.0 json": (
            best_of(args.rounds, pairs, lambda: old.encode(flat)),
            best_of(args.rounds, pairs, lambda: old.decode(old_bytes, FlatState)),
            len(old_bytes),
        ),
    }
    print(f"{'codec':<18}{'encode µs':>11}{'decode µs':>11}{'total µs':>10}{'bytes':>8}")
    for name, (enc, dec, size) in figures.items():
        print(f"{name:<18}{enc * 1e6:>11.1f}{dec * 1e6:>11.1f}{(enc + dec) * 1e6:>10.1f}{size:>8}")
    new_total = sum(figures["typed (msgspec)"][:2])
    old_total = sum(figures["0.1.0 json"][:2])
    ratio = old_total / new_total
    print(f"ratio (0.1.0 time / typed time): {ratio:.2f}x  (target >= 2x, never below 1x)")
    return 0 if ratio >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
