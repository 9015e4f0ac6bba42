"""A runtime process whose actors send messages and keep reminders, for multi-node tests.

Run ``python -m kelpie.testing.bank_node --url URL --node-id n1
[--lease-seconds 1]``. Like ``kelpie.testing.runtime_node`` (same line-JSON
protocol, same ``NodeClient``) but it serves ``Teller`` in the namespaces
``bank`` and ``vault``:

- ``deposit(amount)``; ``transfer({"to": [ns, id], "amount", "seq"})`` debits
  and ``ctx.send``s ``credit`` to the target in the same commit;
  ``credit({"from", "amount", "seq", "via"})`` adds the amount and appends
  ``seq`` to ``received[from]``, so a test sees every message a target applied,
  in the order it applied them, and which node sent and which applied it.
- ``remind({"name", "after", "every"})`` and ``cancel(name)`` set and cancel a
  reminder whose ``tick`` appends a ``Fire`` (name, node, loop time).

``start_bank_nodes`` starts several such processes on one store and stops
them (SIGTERM, then SIGKILL) when its ``with`` block ends; ``read_teller``
reads a teller's state straight from a store, past any lease.

This is test-harness code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kelpie.actor.actor import Actor
from kelpie.actor.codec import StateRecord
from kelpie.actor.context import ActorContext
from kelpie.actor.keys import STATE_KEY
from kelpie.identity import ActorId
from kelpie.runtime.runtime import Runtime
from kelpie.storage.protocol import Storage
from kelpie.testing import runtime_node

__all__ = ["NAMESPACES", "BankNode", "Fire", "Teller", "Till", "read_teller", "start_bank_nodes"]

NAMESPACES = ("bank", "vault")
NODE_ID = ""
"""The id of the node this process runs (set by ``serve``): handlers record it."""


@dataclass
class Fire:
    name: str
    node: str
    at: float


@dataclass
class Till:
    balance: int = 0
    received: dict[str, list[int]] = field(default_factory=dict)
    """Sender (``ns/id``) -> the ``seq`` of each message applied, in applying order."""
    applied_by: dict[str, int] = field(default_factory=dict)
    """Node id -> messages that node applied here."""
    crossed: int = 0
    """Messages applied on another node than the one whose commit sent them."""
    armed: dict[str, float] = field(default_factory=dict)
    """Reminder name -> loop time of its first due time (as the setting handler saw it)."""
    fired: list[Fire] = field(default_factory=list)


class Teller(Actor[Till]):
    """An account that transfers by message and records what it applied and fired."""

    state_type = Till

    async def deposit(self, ctx: ActorContext[Till], payload: int) -> int:
        ctx.state.balance += int(payload)
        return ctx.state.balance

    async def transfer(self, ctx: ActorContext[Till], payload: dict[str, Any]) -> int:
        amount = int(payload["amount"])
        ctx.state.balance -= amount
        sender = f"{ctx.actor_id.namespace}/{ctx.actor_id.id}"
        ctx.send(
            ActorId(*payload["to"]),
            "credit",
            {"from": sender, "amount": amount, "seq": payload["seq"], "via": NODE_ID},
        )
        return ctx.state.balance

    async def credit(self, ctx: ActorContext[Till], payload: dict[str, Any]) -> None:
        ctx.state.balance += int(payload["amount"])
        ctx.state.received.setdefault(payload["from"], []).append(int(payload["seq"]))
        ctx.state.applied_by[NODE_ID] = ctx.state.applied_by.get(NODE_ID, 0) + 1
        if payload["via"] != NODE_ID:
            ctx.state.crossed += 1

    async def remind(self, ctx: ActorContext[Till], payload: dict[str, Any]) -> None:
        name = str(payload["name"])
        after = float(payload["after"])
        ctx.set_reminder(
            name, after=after, operation="tick", payload=name, every=payload.get("every")
        )
        ctx.state.armed[name] = asyncio.get_running_loop().time() + after

    async def cancel(self, ctx: ActorContext[Till], payload: str) -> None:
        ctx.cancel_reminder(payload)

    async def tick(self, ctx: ActorContext[Till], payload: str) -> None:
        ctx.state.fired.append(Fire(payload, NODE_ID, asyncio.get_running_loop().time()))


async def read_teller(storage: Storage, actor: ActorId) -> dict[str, Any]:
    """A teller's state as stored (the JSON of ``Till``; defaults if it has none)."""
    raw = await storage.get(actor, STATE_KEY)
    if raw is None:
        return {
            "balance": 0, "received": {}, "applied_by": {}, "crossed": 0, "armed": {}, "fired": [],
        }  # fmt: skip
    state: dict[str, Any] = json.loads(StateRecord.decode(raw, str(actor)).payload)
    return state


# -- the server ---------------------------------------------------------------------


class _OneLine(logging.Formatter):
    """Log records on one line each: an exception as its type and message, no traceback."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(logging.makeLogRecord({**record.__dict__, "exc_info": None}))
        if record.exc_info is not None and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        return text


def _register_tellers(runtime: Runtime) -> None:
    for namespace in NAMESPACES:
        runtime.register(namespace, Teller)


async def serve(url: str, node_id: str, lease_seconds: float) -> None:
    """Serve invocations on a free 127.0.0.1 port until SIGTERM/SIGINT, logging one
    line per record (``kelpie.testing.runtime_node.serve`` with tellers)."""
    global NODE_ID
    NODE_ID = node_id
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLine(f"{node_id} %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    await runtime_node.serve(url, node_id, lease_seconds, register=_register_tellers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--lease-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.url, args.node_id, args.lease_seconds))


# -- starting nodes -------------------------------------------------------------------


@dataclass
class BankNode:
    node_id: str
    process: subprocess.Popen[bytes]
    port: int


@contextlib.contextmanager
def start_bank_nodes(
    url: str, count: int, *, lease_seconds: float = 1.0, cwd: Path | None = None
) -> Iterator[dict[str, BankNode]]:
    """``count`` node processes (``n1``..) on ``url``, started together; stopped on exit."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for i in range(1, count + 1):
            command = [
                sys.executable, "-m", "kelpie.testing.bank_node",
                "--url", url, "--node-id", f"n{i}", "--lease-seconds", str(lease_seconds),
            ]  # fmt: skip
            processes[f"n{i}"] = subprocess.Popen(
                command, cwd=cwd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
            )
        nodes: dict[str, BankNode] = {}
        for node_id, process in processes.items():
            assert process.stdout is not None
            line = process.stdout.readline().decode()
            if not line.startswith("READY "):
                raise RuntimeError(f"{node_id} did not start: {line!r}")
            nodes[node_id] = BankNode(node_id, process, int(line.split()[1]))
        yield nodes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
