"""Copying every actor from one store to another, resumably, and verifying two stores.

``kelpie copy`` and ``kelpie verify`` are these functions with progress and a
summary; an application calls them directly (between any two opened
storages: memory, LMDB, SQLite, PostgreSQL, Redis, Redis Cluster, third-party
backends with ``list_actors``)::

    report = await copy_store(source, destination)
    assert report.verification.ok

How it works:

- ``read_actor`` lists an actor's keys and reads every value in one source
  transaction and commits it: a read-only commit raises
  ``TransactionConflictError`` if the actor changed after the first read
  (contract guarantee 5), and the read is retried. What it returns is one
  committed version of the actor, never a mix of two.
- ``copy_store`` lists the source in ``ActorId`` order and writes each actor
  to the destination in **one** transaction: every key, byte for byte, the
  runtime's own records (state, idempotency) included. A destination actor is
  either absent or a complete copy of one committed version. A non-empty
  destination is refused (``DestinationNotEmptyError``) unless ``merge``
  (each copied actor replaces the destination's actor of the same id
  entirely) or ``resume``.
- ``resume`` needs no progress file: both stores list in ``ActorId`` order
  and at most ``CONCURRENCY`` consecutive actors are in flight at any time
  (``in_windows``), so every source actor up to the ``CONCURRENCY``-th last
  actor of the destination was copied completely; the copy restarts after
  that one (ADR 0015). This assumes the destination holds only what the
  interrupted copy wrote; after a ``merge`` into a populated store, copy again
  with ``merge``.
- A read, a write or a listing page that finds a store unavailable (a
  dropped connection, a timeout: ``StorageUnavailableError``, or
  ``CommitOutcomeUnknownError`` for a write, which is rewritten whole, so
  writing it twice is writing it once) is tried again, up to
  ``TRANSIENT_ATTEMPTS`` times over about 3 s, before the copy fails: a
  long copy survives a server's hiccup; a store that stays down still stops
  it, and ``resume`` continues it later.
- The digest of an actor is SHA-256 over its records sorted by key, each key
  and value length-prefixed (4 bytes, big-endian), so no two record sets share
  a digest by concatenation. An actor with no records is absent.

A copy of a live source is consistent per actor (each actor is one committed
version of it), not a point-in-time snapshot of the store: actors written
during the copy may be copied before or after those writes, and an actor
created during the copy behind the listing's position is not copied. The
verification then reports the actors that changed since they were copied.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from kelpie.errors import (
    CommitOutcomeUnknownError,
    DestinationNotEmptyError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.lifecycle import DEFAULT_PAGE, iter_actors, list_actors
from kelpie.storage.protocol import Storage

__all__ = [
    "CONCURRENCY",
    "Comparison",
    "CopyReport",
    "DestinationNotEmptyError",
    "copy_actor",
    "copy_store",
    "digest",
    "in_windows",
    "read_actor",
    "resume_point",
    "verify_stores",
]

Records = list[tuple[bytes, bytes]]

READ_ATTEMPTS = 20
"""How often an actor that keeps changing under the reader (or writer) is tried again."""

CONCURRENCY = 16
"""Actors read (or copied) at once."""


T = TypeVar("T")

TRANSIENT_ATTEMPTS = 6
"""How often a read, write or listing page that found a store unavailable is tried,
0.1 s, 0.2 s, ... 1.6 s apart (about 3 s in all)."""

TRANSIENT = (StorageUnavailableError, CommitOutcomeUnknownError)
"""What a store raises when it could not be reached (or did not answer) this time."""


async def _after_transient(failures: int, error: Exception) -> None:
    """Wait before try ``failures + 1``; re-raise ``error`` once the attempts are used up."""
    if failures >= TRANSIENT_ATTEMPTS:
        raise error
    await asyncio.sleep(0.05 * 2**failures)


async def _retried(once: Callable[[], Awaitable[T]], changing: str, *, pause: bool) -> T:
    """``once()``, tried again after a conflict or an unavailable store.

    A conflict is tried again up to ``READ_ATTEMPTS`` times, then
    ``TransactionConflictError(changing)``; with ``pause`` after a short wait
    (a reader lets the writer finish). An unavailable store is tried again
    up to ``TRANSIENT_ATTEMPTS`` times, then its error is raised.
    """
    conflicts = unavailable = 0
    while True:
        try:
            return await once()
        except TransactionConflictError:
            conflicts += 1
            if conflicts >= READ_ATTEMPTS:
                raise TransactionConflictError(changing) from None
            if pause:
                await asyncio.sleep(min(0.001 * 2 ** (conflicts - 1), 0.2))
        except TRANSIENT as exc:
            unavailable += 1
            await _after_transient(unavailable, exc)


async def read_actor(storage: Storage, actor: ActorId) -> Records:
    """Every ``(key, value)`` of ``actor``, sorted by key, from one committed version.

    ``TransactionConflictError`` if the actor kept changing for ``READ_ATTEMPTS``
    reads; a store unavailable ``TRANSIENT_ATTEMPTS`` times raises its error.
    """

    async def once() -> Records:
        async with storage.transaction(actor) as txn:
            records: Records = []
            for key in await txn.list_keys():
                value = await txn.get(key)
                if value is None:  # cannot happen within one version; read again
                    raise TransactionConflictError(f"key {key!r} vanished mid-read")
                records.append((key, value))
        return records  # leaving the block committed: the reads were one version

    changing = f"actor {actor} kept changing while being read ({READ_ATTEMPTS} attempts)"
    return await _retried(once, changing, pause=True)


async def _listed(
    storage: Storage, namespace: str | None, after: ActorId | None = None, page: int = DEFAULT_PAGE
) -> AsyncIterator[ActorId]:
    """``iter_actors``, where a page that found the store unavailable is listed again
    (after the last actor yielded)."""
    unavailable = 0
    while True:
        try:
            async for actor in iter_actors(storage, namespace, after=after, page=page):
                yield actor
                after = actor
                unavailable = 0
            return
        except TRANSIENT as exc:
            unavailable += 1
            await _after_transient(unavailable, exc)


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
    """What ``verify_stores`` found."""

    identical: int = 0
    missing: list[ActorId] = field(default_factory=list)
    """In the source, not in the destination."""
    extra: list[ActorId] = field(default_factory=list)
    """In the destination only (not looked for with ``sources_only``)."""
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


@dataclass
class CopyReport:
    """What ``copy_store`` did."""

    copied: int
    vanished: int
    """Listed in the source, deleted from it before they were read."""
    resumed_after: ActorId | None
    verification: Comparison | None
    """Every source actor against the destination (None: ``verify=False``)."""

    @property
    def ok(self) -> bool:
        return self.verification is None or self.verification.ok


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
    of the listing (``resume`` relies on this). The first failure cancels the
    rest and is raised.
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


async def verify_stores(
    source: Storage,
    destination: Storage,
    namespace: str | None = None,
    *,
    sources_only: bool = False,
    on_actor: Callable[[], None] | None = None,
) -> Comparison:
    """Compare every actor of ``source`` (and, unless ``sources_only``, of ``destination``)
    by digest; ``on_actor`` is called after each one (progress)."""
    result = Comparison()
    actors = _listed(source, namespace)
    if not sources_only:
        actors = _union(actors, _listed(destination, namespace))

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
        if on_actor is not None:
            on_actor()

    await in_windows(actors, one)
    for found in (result.missing, result.extra, result.different):
        found.sort()
    return result


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

    async def once() -> bool:
        # A conflict (someone wrote the destination actor meanwhile) replaces it again;
        # after an unknown outcome, applied or not, writing the same records is the same.
        async with destination.transaction(actor) as txn:
            if replace:
                wanted = {key for key, _ in records}
                for key in await txn.list_keys():
                    if key not in wanted:
                        await txn.delete(key)
            for key, value in records:
                await txn.set(key, value)
        return True

    return await _retried(once, f"actor {actor} kept changing in the destination", pause=False)


async def resume_point(destination: Storage, namespace: str | None) -> ActorId | None:
    """The actor after which an interrupted copy into ``destination`` restarts (module doc)."""
    last: collections.deque[ActorId] = collections.deque(maxlen=CONCURRENCY)
    async for actor in _listed(destination, namespace, page=10_000):
        last.append(actor)
    if len(last) < CONCURRENCY:
        return None
    return last[0]


async def copy_store(
    source: Storage,
    destination: Storage,
    namespace: str | None = None,
    *,
    merge: bool = False,
    resume: bool = False,
    verify: bool = True,
    on_actor: Callable[[], None] | None = None,
) -> CopyReport:
    """Copy every actor of ``source`` (of ``namespace``) into ``destination`` (module doc).

    ``on_actor`` is called after each actor copied (progress). With ``verify``
    (the default) every source actor is then compared with the destination by
    digest: ``report.verification``; a difference is reported, not raised.
    """
    if source is destination:
        raise ValueError("the source and the destination are the same storage")
    after: ActorId | None = None
    if resume:
        after = await resume_point(destination, namespace)
    elif not merge and await list_actors(destination, namespace, limit=1):
        scope = "" if namespace is None else f" (namespace {namespace!r})"
        raise DestinationNotEmptyError(
            f"the destination is not empty{scope}: merge=True copies into it (replacing "
            "actors of the same id), resume=True continues an interrupted copy"
        )
    copied = vanished = 0

    async def one(actor: ActorId) -> None:
        nonlocal copied, vanished
        if await copy_actor(source, destination, actor, replace=merge or resume):
            copied += 1
        else:
            vanished += 1
        if on_actor is not None:
            on_actor()

    await in_windows(_listed(source, namespace, after), one)
    verification = None
    if verify:
        verification = await verify_stores(source, destination, namespace, sources_only=True)
    return CopyReport(copied, vanished, after, verification)
