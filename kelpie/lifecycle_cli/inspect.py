"""``kelpie actors URL``, ``kelpie show URL NS/ID`` and ``kelpie delete URL NS/ID``.

``show`` reads one actor as one committed version through the protocol's
oldest methods (a transaction's ``list_keys`` and ``get``), so it works on a
third-party backend without ``list_actors``. It tells the runtime's records
apart by their first byte (``kelpie/actor/keys.py``): ``s`` the state record,
``u`` the actor's own KV keys, ``i``/``j`` idempotency records, ``r`` the
idempotency ring; anything else was not written by the runtime and is shown
as an "other" key. The state record's envelope is decoded with
``StateRecord.decode``; a ``json`` payload is shown as JSON, any other codec's
payload (or an undecodable record) as bytes, safely.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kelpie.actor.codec import StateRecord
from kelpie.errors import CorruptStateError
from kelpie.identity import ActorId
from kelpie.lifecycle_cli.common import (
    FAILED,
    CommandError,
    actor_json,
    actor_text,
    bytes_json,
    open_url,
    parse_actor,
    printable,
    run_command,
    safe_url,
)
from kelpie.runtime.lease import stored_lease
from kelpie.storage import lifecycle
from kelpie.storage.copying import read_actor

__all__ = [
    "add_actors_arguments",
    "add_delete_arguments",
    "add_show_arguments",
    "run_actors",
    "run_delete",
    "run_show",
]

_LEASE_NOTE = (
    "held until that node deactivates the actor, or lapses lease_seconds after its "
    "last commit (the store keeps no expiry time: each node judges it on its own clock)"
)
_VALUE_WIDTH = 120


def _cell(text: str) -> str:
    return text if text.isprintable() else json.dumps(text)


# -- actors ---------------------------------------------------------------------


def add_actors_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the storage URL")
    parser.add_argument("--namespace", metavar="NS", help="list only this namespace")
    parser.add_argument("--limit", type=int, metavar="N", help="list at most N actors")
    parser.add_argument(
        "--json", action="store_true", help='one JSON object per line: {"namespace":..., "id":...}'
    )


async def _actors(url: str, namespace: str | None, limit: int | None, as_json: bool) -> int:
    if limit is not None and limit < 1:
        raise CommandError(f"--limit must be at least 1, got {limit}", 2)
    storage = open_url(url)
    try:
        count = 0
        page = min(limit or lifecycle.DEFAULT_PAGE, lifecycle.DEFAULT_PAGE)
        width = 20
        if not as_json:
            print(f"{'NAMESPACE':<{width}}  ID")
        async for actor in lifecycle.iter_actors(storage, namespace, page=page):
            if as_json:
                print(json.dumps(actor_json(actor), ensure_ascii=False))
            else:
                print(f"{_cell(actor.namespace):<{width}}  {_cell(actor.id)}")
            count += 1
            if limit is not None and count >= limit:
                break
        if not as_json:
            more = " (--limit reached)" if limit is not None and count >= limit else ""
            print(f"{count:,} actor{'' if count == 1 else 's'}{more}")
    finally:
        await storage.close()
    return 0


def run_actors(args: argparse.Namespace) -> int:
    return run_command("actors", _actors(args.url, args.namespace, args.limit, args.json))


# -- show -------------------------------------------------------------------------


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the storage URL")
    parser.add_argument(
        "actor",
        metavar="NS/ID",
        help='the actor: NAMESPACE/ID, split at the first "/", '
        'or JSON {"namespace": ..., "id": ...}',
    )
    parser.add_argument("--values", action="store_true", help="print the KV values too")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _state(raw: bytes, actor: ActorId) -> dict[str, Any]:
    """The decoded state record as a JSON-ready dict (undecodable parts shown as bytes)."""
    try:
        record = StateRecord.decode(raw, f"actor {actor_text(actor)}")
    except CorruptStateError as exc:
        return {"error": str(exc), "raw": bytes_json(raw)}
    shown: dict[str, Any] = {
        "seq": record.seq,
        "codec": record.codec,
        "state_version": getattr(record, "state_version", None),
        "idempotency_used": record.idempotency_count,
        "lease_owner": record.owner,
    }
    if record.codec == "json":
        try:
            shown["state"] = json.loads(record.payload)
        except ValueError as exc:
            shown["error"] = f"the json payload does not parse: {exc}"
            shown["raw"] = bytes_json(record.payload)
    else:
        shown["raw"] = bytes_json(record.payload)
    return shown


def _describe(actor: ActorId, records: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    state: dict[str, Any] | None = None
    kv: list[tuple[bytes, bytes]] = []
    other: list[tuple[bytes, bytes]] = []
    idempotency = ring = 0
    for key, value in records:
        kind = key[:1]
        if key == b"s":
            state = _state(value, actor)
        elif kind == b"u":
            kv.append((key[1:], value))
        elif kind in (b"i", b"j"):
            idempotency += 1
        elif kind == b"r":
            ring += 1
        else:
            other.append((key, value))
    return {
        "actor": actor,
        "state": state,
        "kv": kv,
        "other": other,
        "idempotency_records": idempotency,
        "idempotency_ring": ring,
    }


def _key_json(key: bytes, value: bytes, values: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {"key": bytes_json(key), "size": len(value)}
    if values:
        shown["value"] = bytes_json(value)
    return shown


def _print_json(found: dict[str, Any], url: str, values: bool) -> None:
    state = found["state"]
    document = {
        **actor_json(found["actor"]),
        "store": safe_url(url),
        "seq": None if state is None else state.get("seq"),
        "lease_owner": None if state is None else state.get("lease_owner") or None,
        "state_record": state,
        "idempotency_records": found["idempotency_records"],
        "kv": [_key_json(k, v, values) for k, v in found["kv"]],
        "other_keys": [_key_json(k, v, values) for k, v in found["other"]],
    }
    print(json.dumps(document, ensure_ascii=False, sort_keys=False))


def _clip(text: str) -> str:
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"


def _print_table(found: dict[str, Any], url: str, values: bool) -> None:
    rows = [("actor", actor_text(found["actor"])), ("store", safe_url(url))]
    state = found["state"]
    if state is None:
        rows.append(("state", "(no state record: the runtime never committed this actor)"))
    elif "seq" not in state:
        rows.append(("state", f"UNREADABLE: {state['error']}"))
        rows.append(("raw", _clip(printable(bytes.fromhex(state["raw"]["hex"])))))
    else:
        rows.append(("seq", str(state["seq"])))
        if "state" in state:
            text = json.dumps(state["state"], ensure_ascii=False, sort_keys=True)
            if not text.isprintable():  # C1 controls, bidi overrides: escape them all
                text = json.dumps(state["state"], sort_keys=True)
            rows.append(("state", text))
        else:
            raw = bytes.fromhex(state["raw"]["hex"])
            rows.append(("state", f"({len(raw):,} bytes of codec {state['codec']!r})"))
            if "error" in state:
                rows.append(("error", state["error"]))
        version = state["state_version"]
        rows.append(("codec", state["codec"] + ("" if version is None else f", v{version}")))
        owner = state["lease_owner"]
        rows.append(("lease", f"{_cell(owner)} ({_LEASE_NOTE})" if owner else "none"))
        used = state["idempotency_used"]
        rows.append(
            ("idempotency", f"{found['idempotency_records']:,} records kept ({used:,} used)")
        )
    for label, text in rows:
        print(f"{label:<12} {text}")
    kv, other = found["kv"], found["other"]
    print(f"{'kv keys':<12} {len(kv):,}" + (f" (+ {len(other):,} other keys)" if other else ""))
    listed = [(printable(k), v) for k, v in kv] + [(f"[other] {printable(k)}", v) for k, v in other]
    if listed:
        width = min(max(len(name) for name, _ in listed), 60)
        print(f"  {'KEY':<{width}}  {'SIZE':>10}" + ("  VALUE" if values else ""))
        for name, value in listed:
            line = f"  {name:<{width}}  {len(value):>8} B"
            if values:
                line += f"  {_clip(printable(value))}"
            print(line)


async def _show(url: str, actor_arg: str, values: bool, as_json: bool) -> int:
    actor = parse_actor(actor_arg)
    storage = open_url(url)
    try:
        records = await read_actor(storage, actor)
    finally:
        await storage.close()
    if not records:
        raise CommandError(f"actor {actor_text(actor)} has no records in {safe_url(url)}")
    found = _describe(actor, records)
    if as_json:
        _print_json(found, url, values)
    else:
        _print_table(found, url, values)
    return 0


def run_show(args: argparse.Namespace) -> int:
    return run_command("show", _show(args.url, args.actor, args.values, args.json))


# -- delete -----------------------------------------------------------------------


def add_delete_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the storage URL")
    parser.add_argument("actor", metavar="NS/ID", help="the actor (as for kelpie show)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--force",
        action="store_true",
        help="delete even if the actor's state names a lease owner (a node may be running it)",
    )


async def _delete(url: str, actor_arg: str, yes: bool, force: bool) -> int:
    actor = parse_actor(actor_arg)
    storage = open_url(url)
    name = actor_text(actor)
    try:
        lifecycle.require(storage, "delete_actor")
        keys = await storage.list_keys(actor)
        if not keys:
            print(f"actor {name} has no records in {safe_url(url)}: nothing to delete")
            return 0
        owner, _ = await stored_lease(storage, actor)
        if owner and not force:
            raise CommandError(
                f"actor {name} is leased by node {owner!r} (running there, or that node "
                "stopped less than lease_seconds ago): deactivate it there, or pass --force"
            )
        if not yes:
            sys.stderr.write(
                f"Delete actor {name} and its {len(keys):,} records from {safe_url(url)}? "
                "Type 'yes' to delete: "
            )
            sys.stderr.flush()
            answer = sys.stdin.readline().strip().lower()
            if answer not in ("y", "yes"):
                print(f"not deleted: actor {name}", file=sys.stderr)
                return FAILED
        await lifecycle.delete_actor(storage, actor)
    finally:
        await storage.close()
    print(f"deleted actor {name} ({len(keys):,} records)")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    return run_command("delete", _delete(args.url, args.actor, args.yes, args.force))
