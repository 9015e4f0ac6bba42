"""A runtime process for multi-process tests: one ``Runtime`` with a node id, served over TCP.

Run ``python -m kelpie.testing.runtime_node --url URL --node-id n1
[--lease-seconds 1] [--port 0]``. It prints ``READY <port>`` on stdout once
it listens on 127.0.0.1 and then serves one JSON object per line on every
connection, answering each request in order::

    -> {"ns": "account", "id": "a1", "op": "apply", "payload": {...}, "key": "t1"}
    <- {"ok": true, "result": ...}
    <- {"ok": false, "error": "ActorActiveElsewhereError", "message": "...", "owner": "n2"}
    -> {"op": "__stats__"}    <- {"ok": true, "result": {"ok": 3, ...}}

``NodeClient`` is the matching asyncio client: it raises the kelpie error an
answer names (``ActorActiveElsewhereError`` with its ``owner``). The actor
served is ``LedgerAccount`` (namespace ``account``): every ``apply`` adds an
amount to the balance and journals it under ``j:<txn>`` in the same commit, so
``ledger_violations`` can check state and KV against each other.

This is test-harness code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kelpie.errors as kerrors
from kelpie.actor.actor import Actor
from kelpie.actor.codec import StateRecord
from kelpie.actor.context import ActorContext
from kelpie.actor.keys import STATE_KEY, user_prefix
from kelpie.identity import ActorId
from kelpie.runtime.runtime import Runtime
from kelpie.storage.protocol import Storage
from kelpie.storage.registry import open_storage

__all__ = ["JOURNAL", "LedgerAccount", "NodeClient", "ledger_violations", "main", "serve"]

JOURNAL = b"j:"


@dataclass
class Ledger:
    balance: int = 0
    ops: int = 0


class LedgerAccount(Actor[Ledger]):
    """An account whose state and KV journal must always agree."""

    state_type = Ledger

    async def apply(self, ctx: ActorContext[Ledger], payload: dict[str, Any]) -> dict[str, int]:
        amount = int(payload["amount"])
        ctx.state.balance += amount
        ctx.state.ops += 1
        await ctx.kv_set(JOURNAL + str(payload["txn"]).encode(), str(amount).encode())
        return {"balance": ctx.state.balance, "ops": ctx.state.ops}

    async def read(self, ctx: ActorContext[Ledger], payload: Any) -> dict[str, int]:
        return {"balance": ctx.state.balance, "ops": ctx.state.ops}


async def ledger_violations(
    storage: Storage, actor: ActorId, acknowledged: dict[str, int]
) -> tuple[list[str], list[str]]:
    """``(violations, lost)`` for one ``LedgerAccount``, read straight from ``storage``.

    A violation: state and journal disagree (balance or count), or the record
    cannot be read. ``lost``: acknowledged txns (``txn -> amount``) with no
    journal entry.
    """
    problems: list[str] = []
    raw = await storage.get(actor, STATE_KEY)
    stored_journal = user_prefix(JOURNAL)
    journal = await storage.list_keys(actor, stored_journal)
    amounts: dict[str, int] = {}
    for key in journal:
        value = await storage.get(actor, key)
        if value is None:
            problems.append(f"{actor}: journal key {key!r} listed but absent")
            continue
        amounts[key[len(stored_journal) :].decode()] = int(value)
    balance = ops = 0
    if raw is not None:
        record = StateRecord.decode(raw, str(actor))
        state = json.loads(record.payload)
        balance, ops = int(state["balance"]), int(state["ops"])
    if balance != sum(amounts.values()) or ops != len(amounts):
        problems.append(
            f"{actor}: state says balance={balance} ops={ops}, journal says "
            f"balance={sum(amounts.values())} ops={len(amounts)}"
        )
    for txn, amount in acknowledged.items():
        if txn in amounts and amounts[txn] != amount:
            problems.append(f"{actor}: txn {txn} journaled {amounts[txn]}, acknowledged {amount}")
    lost = sorted(txn for txn in acknowledged if txn not in amounts)
    return problems, lost


# -- the server ---------------------------------------------------------------------


async def _answer(runtime: Runtime, stats: Counter[str], request: dict[str, Any]) -> dict[str, Any]:
    if request.get("op") == "__stats__":
        return {"ok": True, "result": dict(stats)}
    try:
        result = await runtime.invoke(
            ActorId(request["ns"], request["id"]),
            request["op"],
            request.get("payload"),
            idempotency_key=request.get("key"),
        )
    except kerrors.KelpieError as exc:
        name = type(exc).__name__
        stats[name] += 1
        answer: dict[str, Any] = {"ok": False, "error": name, "message": str(exc)}
        if isinstance(exc, kerrors.ActorActiveElsewhereError):
            answer["owner"] = exc.owner
        return answer
    stats["ok"] += 1
    return {"ok": True, "result": result}


def _register_ledger(runtime: Runtime) -> None:
    runtime.register("account", LedgerAccount)


async def serve(
    url: str,
    node_id: str,
    lease_seconds: float,
    port: int = 0,
    *,
    register: Callable[[Runtime], None] = _register_ledger,
) -> None:
    """Serve invocations on 127.0.0.1:port until SIGTERM/SIGINT (``register`` names the
    actor types; by default the ledger's ``account``)."""
    storage = open_storage(url)
    runtime = Runtime(storage, node_id=node_id, lease_seconds=lease_seconds, invocation_timeout=10)
    register(runtime)
    stats: Counter[str] = Counter()
    connections: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections[writer] = task
        try:
            while line := await reader.readline():
                answer = await _answer(runtime, stats, json.loads(line))
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            connections.pop(writer, None)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    async with server:
        await stop.wait()
        # End every connection's handler here (EOF), not by asyncio.run's cancellation.
        for writer in list(connections):
            writer.close()
        if connections:
            await asyncio.wait(list(connections.values()), timeout=15)
    await runtime.close()
    await storage.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--lease-seconds", type=float, default=1.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.url, args.node_id, args.lease_seconds, args.port))


# -- the client ---------------------------------------------------------------------


class NodeClient:
    """One connection to a runtime node; requests are answered in order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self._reader, self._writer

    async def request(self, request: dict[str, Any]) -> Any:
        """Send one request; return its result or raise the kelpie error it names.

        A broken or timed-out exchange (the caller's ``asyncio.timeout``) drops
        the connection so a late answer is never read as the next one's.
        """
        async with self._lock:
            try:
                reader, writer = await self._connect()
                writer.write(json.dumps(request).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
                if not line:
                    raise ConnectionError(f"node on port {self.port} closed the connection")
            except BaseException:
                self.close()
                raise
        answer = json.loads(line)
        if answer["ok"]:
            return answer["result"]
        error_cls = getattr(kerrors, answer["error"], kerrors.KelpieError)
        if error_cls is kerrors.ActorActiveElsewhereError:
            raise kerrors.ActorActiveElsewhereError(answer["message"], owner=answer["owner"])
        raise error_cls(answer["message"])

    async def invoke(
        self, actor: ActorId, op: str, payload: Any = None, *, key: str | None = None
    ) -> Any:
        return await self.request(
            {"ns": actor.namespace, "id": actor.id, "op": op, "payload": payload, "key": key}
        )

    def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()


if __name__ == "__main__":
    main()
