"""``kelpie migrate URL --actor-class module:Class``: bring every stored actor up to date.

The runtime migrates an actor's state lazily, when it loads it (ADR 0016). This
command does it eagerly for one namespace: it lists the actors
(``kelpie.storage.lifecycle.iter_actors``), and for each one, in one storage
transaction, reads the state record, and if it is older than the class's
``state_version`` migrates it (``migrate_state``, validated as ``state_type``)
and writes it back at the class's version, keeping its commit count and lease
owner (a runtime that holds the actor reloads it on its next commit, through
the fence). Actors already at the class's version are left alone, so a second
run skips them: the command is resumable, and ``--after NS/ID`` starts the
listing after a given actor. ``--dry-run`` reads and migrates in memory, and
writes nothing.

Progress goes to stderr; the summary (migrated / already current / failed,
with each failure's reason) to stdout, as a table or ``--json``. Exit status:
0 when no actor failed, 1 when some did, 2 for a bad URL, class or option.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from kelpie.actor.actor import Actor
from kelpie.actor.codec import JsonCodec, StateCodec, pack_record
from kelpie.actor.keys import STATE_KEY
from kelpie.actor.state import StateSchema
from kelpie.errors import ConfigError, InvalidActorIdError, KelpieError, TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage.lifecycle import iter_actors
from kelpie.storage.protocol import Storage

__all__ = ["Summary", "add_arguments", "load_actor_class", "migrate", "run"]

USAGE = 2
FAILED = 1
_CONFLICT_ATTEMPTS = 3


class UsageError(Exception):
    """A bad class, namespace or actor id on the command line (exit status 2)."""


@dataclass
class Summary:
    """What a run did, per actor outcome."""

    migrated: list[ActorId] = field(default_factory=list)
    current: list[ActorId] = field(default_factory=list)
    failed: list[tuple[ActorId, str]] = field(default_factory=list)
    last: ActorId | None = None
    """The last actor looked at (resume with ``--after`` from here)."""

    def as_json(self, dry_run: bool) -> dict[str, Any]:
        return {
            "dry_run": dry_run,
            "migrated": len(self.migrated),
            "already_current": len(self.current),
            "failed": [
                {"namespace": a.namespace, "id": a.id, "reason": reason}
                for a, reason in self.failed
            ],
            "last": None if self.last is None else [self.last.namespace, self.last.id],
        }


def load_actor_class(spec: str) -> type[Actor[Any]]:
    """``package.module:Class`` -> the class (the current directory is importable)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"--actor-class must be module:Class, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot load --actor-class {spec}: {exc}") from exc
    if not isinstance(target, type) or not issubclass(target, Actor):
        raise UsageError(f"--actor-class {spec} is not an Actor subclass")
    return target


async def _migrate_one(
    storage: Storage, schema: StateSchema, actor: ActorId, dry_run: bool
) -> bool:
    """True if ``actor`` was (or, dry, would be) migrated; False if already current."""
    async with storage.transaction(actor) as txn:
        raw = await txn.get(STATE_KEY)
        if raw is None:
            await txn.abort()
            return False  # KV only: no state to migrate
        record = schema.parse(raw, actor)
        schema.check_version(record, actor)
        if record.state_version == schema.version:
            await txn.abort()
            return False
        payload = schema.codec.encode(schema.decode(record, actor))
        if dry_run:
            await txn.abort()
            return True
        await txn.set(
            STATE_KEY,
            pack_record(
                record.seq + 1,
                record.idempotency_count,
                schema.codec.name,
                payload,
                record.owner,
                schema.version,
            ),
        )
    return True


async def migrate(
    storage: Storage,
    actor_cls: type[Actor[Any]],
    namespace: str,
    *,
    after: ActorId | None = None,
    dry_run: bool = False,
    codec: StateCodec | None = None,
    progress: Any = None,
) -> Summary:
    """Migrate every actor of ``namespace`` stored in ``storage`` to ``actor_cls``'s version.

    ``progress(summary)`` (if given) is called after each actor.
    """
    schema = StateSchema(actor_cls, codec if codec is not None else JsonCodec())
    summary = Summary()
    async for actor in iter_actors(storage, namespace, after=after):
        summary.last = actor
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                changed = await _migrate_one(storage, schema, actor, dry_run)
            except TransactionConflictError as exc:
                if attempt + 1 < _CONFLICT_ATTEMPTS:
                    continue
                summary.failed.append((actor, f"{type(exc).__name__}: {exc}"))
            except KelpieError as exc:
                summary.failed.append((actor, f"{type(exc).__name__}: {exc}"))
            else:
                (summary.migrated if changed else summary.current).append(actor)
            break
        if progress is not None:
            progress(summary)
    return summary


def _parse_actor(text: str) -> ActorId:
    namespace, slash, ident = text.partition("/")
    if not slash:
        raise UsageError(f"--after must be NAMESPACE/ID, got {text!r}")
    try:
        return ActorId(namespace, ident)
    except InvalidActorIdError as exc:
        raise UsageError(f"--after {text!r}: {exc}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the storage URL, e.g. lmdb:///var/lib/app/kelpie")
    parser.add_argument(
        "--actor-class",
        required=True,
        metavar="MODULE:CLASS",
        help="the actor class whose state_version and migrate_state to apply",
    )
    parser.add_argument(
        "--namespace",
        help="the namespace the class serves (default: the class's `namespace` attribute)",
    )
    parser.add_argument("--dry-run", action="store_true", help="migrate in memory, write nothing")
    parser.add_argument("--after", metavar="NS/ID", help="start after this actor (resume)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


class _Shown:
    """Progress on stderr: the shared live counter (redrawn on a terminal, a line
    every few seconds otherwise) and one line per failure as it happens."""

    def __init__(self) -> None:
        from kelpie.lifecycle_cli.common import Progress

        self.counter = Progress("checked")
        self._failed = 0

    def __call__(self, summary: Summary) -> None:
        self.counter.add()
        if len(summary.failed) > self._failed:
            self._failed = len(summary.failed)
            actor, reason = summary.failed[-1]
            self.counter.close()
            print(f"migrate: {actor} failed: {reason}", file=sys.stderr)


def _print_summary(summary: Summary, dry_run: bool) -> None:
    verb = "would migrate" if dry_run else "migrated"
    print(f"{verb:<16} {len(summary.migrated)}")
    print(f"{'already current':<16} {len(summary.current)}")
    print(f"{'failed':<16} {len(summary.failed)}")
    for actor, reason in summary.failed:
        print(f"  {actor}: {reason}")
    if summary.failed:
        print("fix the class (or the data), then run again: current actors are skipped")


async def _run(args: argparse.Namespace) -> int:
    from kelpie.storage.registry import open_storage

    actor_cls = load_actor_class(args.actor_class)
    namespace = args.namespace or getattr(actor_cls, "namespace", None)
    if not isinstance(namespace, str) or not namespace:
        raise UsageError(f"give --namespace: {args.actor_class} has no `namespace` attribute")
    after = _parse_actor(args.after) if args.after else None
    storage = open_storage(args.url)
    shown = _Shown()
    try:
        summary = await migrate(
            storage,
            actor_cls,
            namespace,
            after=after,
            dry_run=args.dry_run,
            progress=shown,
        )
    finally:
        shown.counter.close()
        await storage.close()
    if args.json:
        print(json.dumps(summary.as_json(args.dry_run), ensure_ascii=False))
    else:
        _print_summary(summary, args.dry_run)
    return FAILED if summary.failed else 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except (UsageError, ConfigError) as exc:
        print(f"kelpie migrate: {exc}", file=sys.stderr)
        return USAGE
    except KelpieError as exc:
        print(f"kelpie migrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return FAILED
