"""``kelpie copy SRC DST``: every actor from any backend to any other, resumable, verified.

How it works:

- The source is listed with ``iter_actors`` in ``ActorId`` order. Each actor
  is read as one committed version (``digest.read_actor``: all keys and
  values in one source transaction, committed as a read-only transaction so
  a change in between is detected and the read repeated) and written to the
  destination in **one** transaction: every key, byte for byte, the
  runtime's own records (state, idempotency) included. A destination actor
  is therefore either absent or a complete copy of one committed version.
- A non-empty destination is refused unless ``--merge`` (each copied actor
  then replaces the destination's actor of the same id entirely; actors only
  in the destination are left alone) or ``--resume``.
- ``--resume`` needs no progress file (none that would work for Redis ->
  Redis anyway): both stores list in the same ``ActorId`` order, and at most
  ``CONCURRENCY`` consecutive actors are in flight at any time
  (``digest.in_windows``), so every source actor up to the
  ``CONCURRENCY``-th last actor of the destination was copied completely. The
  copy restarts after that one and replaces the few after it. This assumes
  the destination holds only what the interrupted copy wrote (a copy into an
  empty store); after a ``--merge`` into a populated store, run the copy
  again with ``--merge`` instead, which rewrites everything.
- At the end every source actor is compared with the destination by digest
  (``kelpie verify`` compares both ways). Exit status 1 on any difference.

A copy of a live source is consistent per actor (each actor is one committed
version of it), not a point-in-time snapshot of the store: actors written
during the copy may be copied before or after those writes, and an actor
created during the copy behind the listing's position is not copied. The
final verification then reports the actors that changed since they were
copied.
"""

from __future__ import annotations

import argparse
import collections
import time

from kelpie.errors import TransactionConflictError
from kelpie.identity import ActorId
from kelpie.lifecycle_cli.common import (
    FAILED,
    USAGE,
    CommandError,
    Progress,
    actor_text,
    open_url,
    run_command,
    safe_url,
)
from kelpie.lifecycle_cli.digest import CONCURRENCY, READ_ATTEMPTS, compare, in_windows, read_actor
from kelpie.storage.lifecycle import iter_actors, list_actors
from kelpie.storage.protocol import Storage

__all__ = ["add_copy_arguments", "copy_actor", "resume_point", "run_copy"]


async def copy_actor(
    source: Storage, destination: Storage, actor: ActorId, *, replace: bool
) -> bool:
    """Copy one actor in one destination transaction; False if the source has none of it.

    With ``replace`` the destination's keys that the source lacks are deleted
    in the same transaction, so the destination actor ends equal to the source.
    """
    records = await read_actor(source, actor)
    if not records:
        return False  # deleted since it was listed
    for _ in range(READ_ATTEMPTS):
        try:
            async with destination.transaction(actor) as txn:
                if replace:
                    wanted = {key for key, _ in records}
                    for key in await txn.list_keys():
                        if key not in wanted:
                            await txn.delete(key)
                for key, value in records:
                    await txn.set(key, value)
            return True
        except TransactionConflictError:
            continue  # someone wrote the destination actor meanwhile: replace again
    raise CommandError(f"actor {actor_text(actor)} kept changing in the destination")


async def resume_point(destination: Storage, namespace: str | None) -> ActorId | None:
    """The actor after which an interrupted copy into ``destination`` restarts (module doc)."""
    last: collections.deque[ActorId] = collections.deque(maxlen=CONCURRENCY)
    async for actor in iter_actors(destination, namespace, page=10_000):
        last.append(actor)
    if len(last) < CONCURRENCY:
        return None
    return last[0]


async def _copy(
    source_url: str,
    destination_url: str,
    namespace: str | None,
    *,
    merge: bool,
    resume: bool,
) -> int:
    src_name, dst_name = safe_url(source_url), safe_url(destination_url)
    if source_url == destination_url:
        raise CommandError(f"SRC and DST are the same store ({src_name})", USAGE)
    source = open_url(source_url)
    try:
        destination = open_url(destination_url)
        try:
            return await _copy_between(
                source, destination, namespace, src_name, dst_name, merge=merge, resume=resume
            )
        finally:
            await destination.close()
    finally:
        await source.close()


async def _copy_between(
    source: Storage,
    destination: Storage,
    namespace: str | None,
    src_name: str,
    dst_name: str,
    *,
    merge: bool,
    resume: bool,
) -> int:
    started = time.perf_counter()
    after: ActorId | None = None
    if resume:
        after = await resume_point(destination, namespace)
    elif not merge and await list_actors(destination, namespace, limit=1):
        scope = "" if namespace is None else f" (namespace {namespace!r})"
        raise CommandError(
            f"{dst_name} is not empty{scope}: pass --merge to copy into it "
            "(replacing actors of the same id) or --resume to continue an interrupted copy"
        )
    copied = vanished = 0
    progress = Progress("copied")

    async def one(actor: ActorId) -> None:
        nonlocal copied, vanished
        if await copy_actor(source, destination, actor, replace=merge or resume):
            copied += 1
        else:
            vanished += 1
        progress.add()

    try:
        await in_windows(iter_actors(source, namespace, after=after), one)
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    resumed = "" if after is None else f", resumed after {actor_text(after)}"
    gone = f" ({vanished:,} deleted from the source meanwhile)" if vanished else ""
    print(
        f"copied {copied:,} actors{gone} from {src_name} to {dst_name} in {seconds:.1f} s{resumed}"
    )
    checking = Progress("verified")
    try:
        result = await compare(source, destination, namespace, sources_only=True, progress=checking)
    finally:
        checking.close()
    print(f"verify: {result.summary()}")
    for line in result.lines():
        print(line)
    if not result.ok:
        print(
            "the copy does not match: if the source was written meanwhile, "
            "run the copy again with --merge (or stop the writers first)"
        )
        return FAILED
    return 0


def add_copy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", help="storage URL to copy from")
    parser.add_argument("destination", metavar="DST", help="storage URL to copy to")
    parser.add_argument("--namespace", metavar="NS", help="copy only this namespace")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="copy into a non-empty destination, replacing actors of the same id",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a copy that was interrupted (the destination holds only its actors)",
    )


def run_copy(args: argparse.Namespace) -> int:
    return run_command(
        "copy",
        _copy(args.source, args.destination, args.namespace, merge=args.merge, resume=args.resume),
    )
