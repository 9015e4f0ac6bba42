"""Writes tests/golden/records-0.1.0.json: the records the 0.1.0 release stores.

Run once, with the release that wrote them checked out (it was run at commit
af40658, before the typed state codec of issue 14)::

    .venv/bin/python -m tests.golden.make_golden

It runs the same invocations through ``Runtime`` on memory://, LMDB and a private
redis-server, reads every record of every actor straight from each store, and
checks the stored bytes are the same on all three (the runtime writes the same
values everywhere; only each backend's own bookkeeping, which the runtime never
sees, differs). ``tests/test_state_golden.py`` loads these records with the
current code, on every one of those backends, forever.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kelpie import ActorId, Runtime, Storage, open_storage
from tests.golden.actors import CLASSES

OUT = Path(__file__).resolve().parent / "records-0.1.0.json"
LONG_KEY = "long-" + "k" * 300  # over 240 bytes: stored under its SHA-256

# (namespace, id, operation, payload, idempotency key or None), in order.
CALLS: list[tuple[str, str, str, Any, str | None]] = [
    ("counter", "c1", "add", {"by": 5}, "k-1"),
    ("counter", "c1", "add", {"by": 7}, LONG_KEY),
    ("counter", "c1", "label", 'é ünïcode ☃ "quoted" \\ \n', None),
    ("counter", "c1", "add", {"by": -2}, None),
    ("counter", "odd id/with:colons{x}", "add", {"by": 1}, None),
    (
        "profile",
        "p1",
        "update",
        {
            "name": "Zoë",
            "tags": ["a", "b"],
            "scores": {"x": 1, "é": 2},
            "ratio": 0.1,
            "nick": None,
            "big": 2**70,
        },
        "p-1",
    ),
    ("profile", "p1", "update", {"ratio": 1e16, "active": False}, None),
    ("profile", "p1", "update", {"nick": "z"}, "p-2"),
    ("dict", "d1", "put", {"k": "a", "v": {"nested": [1, 2.5, None, True, "s"]}}, None),
    ("dict", "d1", "put", {"k": "ü", "v": []}, None),
    ("dict", "d1", "put", {"k": "0", "v": -3}, "d-1"),
]
LEASED = ActorId("counter", "leased")
"""Invoked by a runtime with node_id "node-a" and read while it still holds the lease."""


async def _records(storage: Storage, actor: ActorId) -> list[list[str]]:
    keys = await storage.list_keys(actor)
    out = []
    for key in keys:
        value = await storage.get(actor, key)
        assert value is not None
        out.append([key.hex(), value.hex()])
    return out


def _register(runtime: Runtime) -> Runtime:
    for namespace, cls in CLASSES.items():
        runtime.register(namespace, cls)
    return runtime


async def _scenario(storage: Storage) -> dict[str, Any]:
    replays: dict[str, list[dict[str, Any]]] = {}
    async with _register(Runtime(storage)) as runtime:
        for namespace, ident, operation, payload, key in CALLS:
            actor = ActorId(namespace, ident)
            result = await runtime.invoke(actor, operation, payload, idempotency_key=key)
            if key is not None:
                replays.setdefault(str(actor), []).append(
                    {"key": key, "operation": operation, "payload": payload, "result": result}
                )
        states = {}
        for namespace, ident, *_ in CALLS:
            actor = ActorId(namespace, ident)
            states[str(actor)] = await runtime.invoke(actor, "get")
    actors: list[dict[str, Any]] = []
    for namespace, ident, *_ in CALLS:
        actor = ActorId(namespace, ident)
        if any(entry["id"] == ident and entry["namespace"] == namespace for entry in actors):
            continue
        actors.append(
            {
                "namespace": namespace,
                "id": ident,
                "records": await _records(storage, actor),
                "state": states[str(actor)],
                "replays": replays.get(str(actor), []),
            }
        )
    leased = _register(Runtime(storage, node_id="node-a"))
    state = await leased.invoke(LEASED, "add", {"by": 3}, idempotency_key="l-1")
    actors.append(
        {
            "namespace": LEASED.namespace,
            "id": LEASED.id,
            "node_id": "node-a",
            "records": await _records(storage, LEASED),
            "state": {"n": 3, "label": ""},
            "replays": [{"key": "l-1", "operation": "add", "payload": {"by": 3}, "result": state}],
        }
    )
    await leased.close()
    return {"actors": actors}


async def _on(url: str) -> dict[str, Any]:
    storage = open_storage(url)
    try:
        return await _scenario(storage)
    finally:
        await storage.close()


async def _write(commit: str) -> int:
    from kelpie.testing.redis_server import RedisServer

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["memory"] = await _on("memory://")
        results["lmdb"] = await _on(f"lmdb://{tmp}/lmdb")
        with RedisServer(Path(tmp) / "redis") as server:
            results["redis"] = await _on(server.url)
    first = results["memory"]
    for name, result in results.items():
        if result != first:
            print(f"{name} stored other bytes than memory://", file=sys.stderr)
            return 1
    document = {
        "release": "0.1.0",
        "commit": commit,
        "written_on": sorted(results),
        "note": "records as [key hex, value hex]; identical on every backend listed",
        **first,
    }
    OUT.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(first['actors'])} actors)")
    return 0


def main() -> int:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return asyncio.run(_write(commit))


if __name__ == "__main__":
    sys.exit(main())
