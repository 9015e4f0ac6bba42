"""Reading one actor as a committed version, its digest, and ``kelpie verify SRC DST``.

``read_actor`` lists an actor's keys and reads every value inside one storage
transaction and then commits it: a read-only commit raises
``TransactionConflictError`` if the actor changed after the first read
(contract guarantee 5), and the read is retried. So what it returns is one
committed version of the actor, never a mix of two.

The digest of an actor is SHA-256 over its records sorted by key, each key
and value length-prefixed (4 bytes, big-endian), so no two different record
sets share a digest by concatenation. An actor with no records is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from kelpie.errors import TransactionConflictError
from kelpie.identity import ActorId
from kelpie.lifecycle_cli.common import (
    FAILED,
    CommandError,
    Progress,
    actor_text,
    open_url,
    run_command,
    safe_url,
)
from kelpie.storage.lifecycle import iter_actors
from kelpie.storage.protocol import Storage

__all__ = ["Comparison", "add_verify_arguments", "compare", "digest", "read_actor", "run_verify"]

Records = list[tuple[bytes, bytes]]

READ_ATTEMPTS = 20
"""How often an actor that keeps changing under the reader is read again."""

CONCURRENCY = 16
"""Actors read (or copied) at once."""

SHOWN = 20
"""How many differing actors a report names."""


async def read_actor(storage: Storage, actor: ActorId) -> Records:
    """Every ``(key, value)`` of ``actor``, sorted by key, from one committed version."""
    for attempt in range(READ_ATTEMPTS):
        try:
            async with storage.transaction(actor) as txn:
                records: Records = []
                for key in await txn.list_keys():
                    value = await txn.get(key)
                    if value is None:  # cannot happen within one version; read again
                        raise TransactionConflictError(f"key {key!r} vanished mid-read")
                    records.append((key, value))
            return records  # leaving the block committed: the reads were one version
        except TransactionConflictError:
            await asyncio.sleep(min(0.001 * 2**attempt, 0.2))
    raise CommandError(
        f"actor {actor_text(actor)} kept changing while being read ({READ_ATTEMPTS} attempts)"
    )


def digest(records: Records) -> str:
    """SHA-256 of the sorted, length-prefixed records (hex); see the module docstring."""
    hasher = hashlib.sha256()
    for key, value in sorted(records):
        hasher.update(len(key).to_bytes(4, "big"))
        hasher.update(key)
        hasher.update(len(value).to_bytes(4, "big"))
        hasher.update(value)
    return hasher.hexdigest()


@dataclass
class Comparison:
    """What ``compare`` found."""

    identical: int = 0
    missing: list[ActorId] = field(default_factory=list)
    """In the source, not in the destination."""
    extra: list[ActorId] = field(default_factory=list)
    """In the destination only."""
    different: list[ActorId] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return self.identical + len(self.missing) + len(self.extra) + len(self.different)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def summary(self) -> str:
        return (
            f"{self.compared:,} actors compared: {self.identical:,} identical, "
            f"{len(self.different):,} different, {len(self.missing):,} missing from the "
            f"destination, {len(self.extra):,} only in the destination"
        )

    def lines(self) -> list[str]:
        """The first ``SHOWN`` differences, one per line."""
        named = [
            *(f"  different: {actor_text(a)}" for a in self.different),
            *(f"  missing:   {actor_text(a)}" for a in self.missing),
            *(f"  extra:     {actor_text(a)}" for a in self.extra),
        ]
        if len(named) > SHOWN:
            named = [*named[:SHOWN], f"  ... and {len(named) - SHOWN:,} more"]
        return named


async def _union(
    first: AsyncIterator[ActorId], second: AsyncIterator[ActorId]
) -> AsyncIterator[ActorId]:
    """The merged, duplicate-free walk of two listings in ``ActorId`` order."""
    a = await anext(first, None)
    b = await anext(second, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a < b):
            assert a is not None
            yield a
            a = await anext(first, None)
        elif a is None or b < a:
            yield b
            b = await anext(second, None)
        else:
            yield a
            a = await anext(first, None)
            b = await anext(second, None)


async def in_windows(
    actors: AsyncIterator[ActorId],
    work: Callable[[ActorId], Awaitable[None]],
    concurrency: int = CONCURRENCY,
) -> None:
    """Run ``work`` on each actor, at most ``concurrency`` at once, in a sliding window.

    A new actor starts only when the oldest unfinished one is done, so at any
    moment the unfinished actors are at most ``concurrency`` consecutive ones
    of the listing (``copy --resume`` relies on this). The first failure
    cancels the rest and is raised.
    """
    window: list[asyncio.Task[None]] = []
    try:
        async for actor in actors:
            if len(window) >= concurrency:
                await window.pop(0)
            window.append(asyncio.ensure_future(work(actor)))
        for task in window:
            await task
    finally:
        for task in window:
            task.cancel()
        await asyncio.gather(*window, return_exceptions=True)


async def compare(
    source: Storage,
    destination: Storage,
    namespace: str | None,
    *,
    sources_only: bool,
    progress: Progress | None = None,
) -> Comparison:
    """Digest every actor of ``source`` (and, unless ``sources_only``, of ``destination``)."""
    result = Comparison()
    actors = iter_actors(source, namespace)
    if not sources_only:
        actors = _union(actors, iter_actors(destination, namespace))

    async def one(actor: ActorId) -> None:
        ours, theirs = await asyncio.gather(
            read_actor(source, actor), read_actor(destination, actor)
        )
        if not theirs and ours:
            result.missing.append(actor)
        elif not ours and theirs:
            if not sources_only:
                result.extra.append(actor)
        elif digest(ours) == digest(theirs):
            result.identical += 1
        else:
            result.different.append(actor)
        if progress is not None:
            progress.add()

    await in_windows(actors, one)
    for found in (result.missing, result.extra, result.different):
        found.sort()
    return result


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", help="storage URL of the source")
    parser.add_argument("destination", metavar="DST", help="storage URL of the destination")
    parser.add_argument("--namespace", metavar="NS", help="compare only this namespace")


async def _verify(source_url: str, destination_url: str, namespace: str | None) -> int:
    source = open_url(source_url)
    try:
        destination = open_url(destination_url)
        try:
            progress = Progress("compared")
            try:
                result = await compare(
                    source, destination, namespace, sources_only=False, progress=progress
                )
            finally:
                progress.close()
        finally:
            await destination.close()
    finally:
        await source.close()
    where = f"{safe_url(source_url)} -> {safe_url(destination_url)}"
    print(f"verify {where}: {result.summary()}")
    for line in result.lines():
        print(line)
    return 0 if result.ok else FAILED


def run_verify(args: argparse.Namespace) -> int:
    return run_command("verify", _verify(args.source, args.destination, args.namespace))
