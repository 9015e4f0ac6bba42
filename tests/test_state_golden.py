"""Records written by the 0.1.0 release (tests/golden/records-0.1.0.json) load forever.

The golden file holds every record of each actor as 0.1.0 stored it (state records
in its JSON codec, idempotency records with fingerprints, the idempotency ring,
KV, a lease owner); ``tests/golden/make_golden.py`` wrote it. Each test puts the
bytes into a fresh memory://, LMDB or Redis store and drives the actors through
``Runtime.invoke``, as an upgraded deployment would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kelpie import ActorId, IdempotencyKeyReusedError, Runtime, Storage
from kelpie.actor.codec import StateRecord
from kelpie.actor.keys import STATE_KEY
from tests.golden.actors import CLASSES

GOLDEN = json.loads(
    (Path(__file__).resolve().parent / "golden" / "records-0.1.0.json").read_text("utf-8")
)
ACTORS: list[dict[str, Any]] = GOLDEN["actors"]
BACKENDS = pytest.mark.parametrize("storage_backend", ["memory", "lmdb", "redis"], indirect=True)


def _actor(entry: dict[str, Any]) -> ActorId:
    return ActorId(entry["namespace"], entry["id"])


async def _put(storage: Storage, entry: dict[str, Any]) -> None:
    for key_hex, value_hex in entry["records"]:
        await storage.set(_actor(entry), bytes.fromhex(key_hex), bytes.fromhex(value_hex))


async def _dump(storage: Storage, actor: ActorId) -> list[list[str]]:
    out = []
    for key in await storage.list_keys(actor):
        value = await storage.get(actor, key)
        assert value is not None
        out.append([key.hex(), value.hex()])
    return out


def _runtime(storage: Storage, entry: dict[str, Any]) -> Runtime:
    runtime = Runtime(storage, node_id=entry.get("node_id"))
    for namespace, cls in CLASSES.items():
        runtime.register(namespace, cls)
    return runtime


def test_the_golden_file_covers_what_it_promises() -> None:
    assert GOLDEN["written_on"] == ["lmdb", "memory", "redis"]
    formats = set()
    for entry in ACTORS:
        state = dict(entry["records"])[STATE_KEY.hex()]
        record = StateRecord.decode(bytes.fromhex(state), "golden")
        formats.add((record.codec, record.owner))
    assert formats == {("json", ""), ("json", "node-a")}
    assert sum(len(entry["replays"]) for entry in ACTORS) == 6


@BACKENDS
@pytest.mark.parametrize("entry", ACTORS, ids=lambda entry: f"{entry['namespace']}/{entry['id']}")
async def test_a_release_0_1_0_record_loads_replays_and_stays_byte_identical(
    storage: Storage, entry: dict[str, Any]
) -> None:
    actor = _actor(entry)
    await _put(storage, entry)
    async with _runtime(storage, entry) as runtime:
        assert await runtime.invoke(actor, "get") == entry["state"]
        for replay in entry["replays"]:
            result = await runtime.invoke(
                actor, replay["operation"], replay["payload"], idempotency_key=replay["key"]
            )
            assert result == replay["result"]
        if entry["replays"]:
            first = entry["replays"][0]
            with pytest.raises(IdempotencyKeyReusedError):
                await runtime.invoke(actor, "get", {"other": 1}, idempotency_key=first["key"])
        assert await runtime.invoke(actor, "get") == entry["state"]
        if entry.get("node_id") is None:
            # Reading, replaying and refusing rewrite nothing: a rollback still finds 0.1.0 bytes.
            assert await _dump(storage, actor) == entry["records"]


@BACKENDS
@pytest.mark.parametrize("entry", ACTORS, ids=lambda entry: f"{entry['namespace']}/{entry['id']}")
async def test_a_release_0_1_0_record_takes_new_commits_that_survive_a_reload(
    storage: Storage, entry: dict[str, Any]
) -> None:
    actor = _actor(entry)
    await _put(storage, entry)
    change: dict[str, tuple[str, Any]] = {
        "counter": ("label", "after upgrade"),
        "profile": ("update", {"name": "after upgrade"}),
        "dict": ("put", {"k": "label", "v": "after upgrade"}),
    }
    operation, payload = change[entry["namespace"]]
    async with _runtime(storage, entry) as runtime:
        await runtime.invoke(actor, operation, payload)
    expected = {
        **entry["state"],
        ("name" if entry["namespace"] == "profile" else "label"): "after upgrade",
    }
    async with _runtime(storage, entry) as runtime:
        assert await runtime.invoke(actor, "get") == expected
        for replay in entry["replays"]:
            result = await runtime.invoke(
                actor, replay["operation"], replay["payload"], idempotency_key=replay["key"]
            )
            assert result == replay["result"]
