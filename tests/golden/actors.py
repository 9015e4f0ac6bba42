"""The actor classes whose records the golden files hold (tests/golden/make_golden.py).

They are the classes as the 0.1.0 release ran them: keep them loading those records
forever. Changing a field here changes what the golden test checks; add new classes
instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kelpie import Actor, ActorContext


@dataclass
class Count:
    n: int = 0
    label: str = ""


class Counter(Actor[Count]):
    state_type = Count

    async def add(self, ctx: ActorContext[Count], payload: dict[str, Any]) -> int:
        ctx.state.n += payload["by"]
        await ctx.kv_set(b"last", str(payload["by"]).encode())
        return ctx.state.n

    async def label(self, ctx: ActorContext[Count], payload: str) -> str:
        ctx.state.label = payload
        return payload

    async def get(self, ctx: ActorContext[Count], payload: Any) -> dict[str, Any]:
        return dataclasses.asdict(ctx.state)


@dataclass
class Profile:
    name: str = ""
    tags: list[str] = field(default_factory=list)
    scores: dict[str, int] = field(default_factory=dict)
    ratio: float = 0.0
    nick: str | None = None
    active: bool = True
    big: int = 0


class ProfileActor(Actor[Profile]):
    state_type = Profile

    async def update(self, ctx: ActorContext[Profile], payload: dict[str, Any]) -> list[str]:
        for name, value in payload.items():
            setattr(ctx.state, name, value)
        return sorted(payload)

    async def get(self, ctx: ActorContext[Profile], payload: Any) -> dict[str, Any]:
        return dataclasses.asdict(ctx.state)


class DictActor(Actor[dict[str, Any]]):
    state_type = dict

    async def put(self, ctx: ActorContext[dict[str, Any]], payload: dict[str, Any]) -> int:
        ctx.state[payload["k"]] = payload["v"]
        return len(ctx.state)

    async def get(self, ctx: ActorContext[dict[str, Any]], payload: Any) -> dict[str, Any]:
        return dict(ctx.state)


CLASSES: dict[str, type[Actor[Any]]] = {
    "counter": Counter,
    "profile": ProfileActor,
    "dict": DictActor,
}
"""Namespace -> actor class, as the generator registered them."""
