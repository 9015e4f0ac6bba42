"""One PostgreSQL store: the connection pool, the schema, reads, and batches of commits.

The pool is made, and the table created, on first use (``open_postgres`` does
no I/O). Reads are one statement each, so the header they return and the data
come from one snapshot; concurrent reads of one key each share statements
through a ``Batcher`` of their own (one row per read). Commits arrive in
batches from the group-commit ``Batcher``; ``write_batch`` sends each batch as
ONE statement (``sql._commit``) run in autocommit, hence one transaction and
one WAL flush, in which every commit is fenced by its own header check, so one
commit's conflict never fails its batch-mates (ADR 0017). Every driver exception is translated here
(``errors.translate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any, TypeAlias

import asyncpg

from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    CorruptStateError,
    InvalidActorIdError,
    KelpieError,
    StorageClosedError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.storage.base import Writes
from kelpie.storage.group_commit import Batcher
from kelpie.storage.postgres.errors import is_retryable, translate
from kelpie.storage.postgres.sql import SCHEMA_VERSION, Statements, ddl, upper_bound
from kelpie.storage.postgres.url import PostgresOptions

_ID = itemgetter("id")

__all__ = ["BLIND", "EXPECT_ABSENT", "EXPECT_HEADER", "Database", "Job", "Outcome", "Seen"]

BLIND, EXPECT_ABSENT, EXPECT_HEADER = 0, 1, 2
"""A job's fence: none (write-only), "still absent", "header unchanged"."""

_ROUND_RETRIES = 5
"""Re-runs of a round the server rolled back (a deadlock with another process's batch)."""
_BLIND_RETRIES = 50
"""Re-runs of a write-only job whose actor another process changed mid-statement."""
_CLOSE_TIMEOUT = 5.0
_ROUND_BYTES = 64 << 20
"""A round stops taking jobs past this many bytes of writes (a protocol message and an
array parameter are each limited to 1 GB at the server)."""


@dataclass(frozen=True, slots=True)
class Seen:
    """What a transaction's first read saw: the header, or absence and the deletes counter."""

    incarnation: int | None
    version: int | None
    deletes: int

    @classmethod
    def from_row(cls, row: Any) -> Seen:
        return cls(row["incarnation"], row["version"], row["deletes"] or 0)

    def same_as(self, other: Seen) -> bool:
        """True if no commit or delete of the actor landed between the two reads."""
        if self.incarnation is None:
            return other.incarnation is None and other.deletes == self.deletes
        return (self.incarnation, self.version) == (other.incarnation, other.version)


@dataclass(slots=True)
class Job:
    """One commit (``writes``, fenced by ``seen``) or one ``delete_actor`` (``writes`` None)."""

    actor: ActorId
    seen: Seen | None
    writes: Writes | None

    @property
    def mode(self) -> int:
        if self.seen is None:
            return BLIND
        return EXPECT_ABSENT if self.seen.incarnation is None else EXPECT_HEADER


Outcome: TypeAlias = "BaseException | None"
"""A job's outcome: ``None`` once committed, or the exception its caller gets."""


def _parts(actor: ActorId) -> tuple[bytes, bytes]:
    return actor.namespace.encode(), actor.id.encode()


async def _no_reset(connection: Any) -> None:
    """kelpie leaves no session state behind: skip asyncpg's reset round trip on release."""


class Database:
    """The pool and statements of one ``postgresql://`` store."""

    def __init__(self, options: PostgresOptions) -> None:
        self.options = options
        self.where = options.where
        self.sql = Statements.for_table(options.table)
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None
        self._closed = False
        self._reads: Batcher[tuple[ActorId, bytes], tuple[Seen, bytes | None]] = Batcher(
            self.read_batch,
            max_batch=options.max_batch,
            in_flight_error=lambda: StorageUnavailableError(
                f"the read from {self.where} was cancelled; retry it"
            ),
            shared=True,
        )
        self.rounds_rerun = 0
        """Rounds the server rolled back (deadlocks) and jobs rerun (write-only, header moved)."""

    def error(self, exc: BaseException, action: str, *, sent: bool = False) -> KelpieError:
        return translate(
            exc, where=self.where, action=action, sent=sent, secret=self.options.password
        )

    # -- the pool and the schema -------------------------------------------------

    async def pool(self) -> asyncpg.Pool:
        """The connection pool, made (and the table created) on first use."""
        if self._pool is not None:
            return self._pool
        if self._closed:
            raise StorageClosedError(f"the storage at {self.where} is closed")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                self._pool = await self._open_pool()
        return self._pool

    async def _open_pool(self) -> asyncpg.Pool:
        opts = self.options
        settings = {"application_name": "kelpie"}
        if opts.statement_timeout:
            settings["statement_timeout"] = str(opts.statement_timeout)
        try:
            pool = await asyncpg.create_pool(
                host=opts.host,
                port=opts.port,
                user=opts.user,
                password=opts.password,
                database=opts.database,
                ssl=opts.sslmode,
                timeout=opts.connect_timeout,
                command_timeout=opts.command_timeout or None,
                min_size=opts.pool_min,
                max_size=opts.pool_max,
                server_settings=settings,
                reset=_no_reset,
                max_inactive_connection_lifetime=60.0,
            )
        except Exception as exc:
            raise self.error(exc, "connecting") from exc
        try:
            await self._init_schema(pool)
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def _init_schema(self, pool: asyncpg.Pool) -> None:
        # An advisory lock keyed by the table name: two processes creating the
        # table at once would otherwise race in the catalog.
        lock = zlib.crc32(self.options.table.encode()) - (1 << 31)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1::int)", lock)
                for statement in ddl(self.options.table):
                    await conn.execute(statement)
                stored = await conn.fetchval(self.sql.schema_version)
        except Exception as exc:
            raise self.error(exc, "creating the kelpie table") from exc
        if stored != SCHEMA_VERSION:
            raise ConfigError(
                f"the kelpie table at {self.where} has schema version {stored}; "
                f"this kelpie reads version {SCHEMA_VERSION}: upgrade kelpie"
            )

    async def close(self) -> None:
        self._closed = True
        await self._reads.wait_idle()
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), _CLOSE_TIMEOUT)
        except (Exception, asyncio.CancelledError):
            pool.terminate()

    # -- reads: one statement (one snapshot) each --------------------------------

    async def fetchrow(self, statement: str, *args: Any, action: str) -> Any:
        pool = await self.pool()
        try:
            return await pool.fetchrow(statement, *args)
        except Exception as exc:
            raise self.error(exc, action) from exc

    async def fetch(self, statement: str, *args: Any, action: str) -> list[Any]:
        pool = await self.pool()
        try:
            rows: list[Any] = await pool.fetch(statement, *args)
        except Exception as exc:
            raise self.error(exc, action) from exc
        return rows

    async def fetch_walking_index(self, statement: str, *args: Any, action: str) -> list[Any]:
        """``fetch`` a statement whose ``ORDER BY ... LIMIT`` an index can walk, planned
        with sorts priced out (``SET LOCAL enable_sort = off``, one read-only
        transaction).

        With stale statistics (after a bulk load, before autovacuum's ANALYZE)
        the planner may judge the table tiny, fetch every remaining row of the
        range, sort it and keep the first page -- for each page, so a listing
        costs quadratic time. Without sorts it walks the index and stops at
        the limit, whatever the statistics say.
        """
        pool = await self.pool()
        try:
            async with pool.acquire() as connection, connection.transaction(readonly=True):
                # asyncpg's transaction rolls back on any exception, cancellation
                # included: the pool (which skips its reset) gets a clean connection.
                await connection.execute("SET LOCAL enable_sort = off")
                rows: list[Any] = await connection.fetch(statement, *args)
        except Exception as exc:
            raise self.error(exc, action) from exc
        return rows

    async def read_value(self, actor: ActorId, key: bytes) -> tuple[Seen, bytes | None]:
        """The actor's header (or absence) and the key's value, from one snapshot.

        Reads that arrive while one is at the server share the next statement
        (``read_values``): under load, one round trip serves many transactions.
        """
        return await self._reads.submit((actor, key))

    async def read_batch(
        self, items: Sequence[tuple[ActorId, bytes]]
    ) -> list[tuple[Seen, bytes | None]]:
        if len(items) == 1:
            ((actor, key),) = items
            row = await self.fetchrow(self.sql.read_value, *_parts(actor), key, action="reading")
            return [(Seen.from_row(row), row["value"])]
        namespaces, ids, keys = [], [], []
        for actor, key in items:
            namespace, ident = _parts(actor)
            namespaces.append(namespace)
            ids.append(ident)
            keys.append(key)
        rows = await self.fetch(self.sql.read_values, namespaces, ids, keys, action="reading")
        found = {int(row["n"]): (Seen.from_row(row), row["value"]) for row in rows}
        return [found[number] for number in range(1, len(items) + 1)]

    async def read_keys(self, actor: ActorId, prefix: bytes) -> tuple[Seen, list[bytes]]:
        upper = upper_bound(prefix)
        if upper is None:
            row = await self.fetchrow(
                self.sql.read_keys, *_parts(actor), prefix, action="listing keys"
            )
        else:
            row = await self.fetchrow(
                self.sql.read_keys_below, *_parts(actor), prefix, upper, action="listing keys"
            )
        return Seen.from_row(row), list(row["keys"])

    async def read_seen(self, actor: ActorId) -> Seen:
        row = await self.fetchrow(self.sql.read_version, *_parts(actor), action="validating reads")
        return Seen.from_row(row)

    async def get(self, actor: ActorId, key: bytes) -> bytes | None:
        row = await self.fetchrow(self.sql.get, *_parts(actor), key, action="reading a key")
        return None if row is None else row["value"]

    async def list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        upper = upper_bound(prefix)
        if upper is None:
            rows = await self.fetch(self.sql.list_keys, *_parts(actor), prefix, action="listing")
        else:
            rows = await self.fetch(
                self.sql.list_keys_below, *_parts(actor), prefix, upper, action="listing"
            )
        return [row["key"] for row in rows]

    async def list_actors(
        self, namespace: str | None, after: ActorId | None, limit: int
    ) -> list[ActorId]:
        sql, action = self.sql, "listing actors"
        fetch = self.fetch_walking_index
        if namespace is None:
            if after is None:
                rows = await fetch(sql.list_actors, limit, action=action)
            else:
                rows = await fetch(sql.list_actors_after, limit, *_parts(after), action=action)
        else:
            ns = namespace.encode()
            if after is None or after.namespace < namespace:
                rows = await fetch(sql.list_namespace, limit, ns, action=action)
            elif after.namespace > namespace:
                return []
            else:
                rows = await fetch(
                    sql.list_namespace_after, limit, ns, after.id.encode(), action=action
                )
        try:
            # Rows come in (namespace, id) order: each namespace's ids are built in bulk.
            actors: list[ActorId] = []
            for ns, run in groupby(rows, key=itemgetter("namespace")):
                actors += ActorId._decode_many(bytes(ns), list(map(bytes, map(_ID, run))))
            return actors
        except InvalidActorIdError as exc:
            raise CorruptStateError(
                f"a header row in {self.where} names no valid actor: something other than "
                f"kelpie wrote it ({exc})"
            ) from exc

    # -- writes ------------------------------------------------------------------

    async def write(self, job: Job) -> None:
        """Write one job in a batch of its own."""
        (outcome,) = await self.write_batch((job,))
        if outcome is not None:
            raise outcome

    async def write_batch(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Write every job; one outcome per job, in order.

        A batch is sent in *rounds*: one statement (one transaction) holding at
        most one commit per actor -- nearly always the whole batch. A later
        commit on an actor already in the round, and everything after a
        ``delete_actor`` of it, waits for the next round, so each actor's jobs
        apply in order. A write-only job whose actor another process changed
        during the statement wrote nothing and goes again in the next round.
        """
        outcomes: list[Outcome] = [None] * len(jobs)
        blind_tries = [0] * len(jobs)
        queue = list(range(len(jobs)))
        while queue:
            first = jobs[queue[0]]
            if first.writes is None:
                outcomes[queue.pop(0)] = await self._delete(first.actor)
                continue
            chosen: list[int] = []
            deferred: list[int] = []
            used: set[ActorId] = set()
            size = 0
            for index in queue:
                job = jobs[index]
                if job.writes is None or job.actor in used or (chosen and size > _ROUND_BYTES):
                    deferred.append(index)
                else:
                    chosen.append(index)
                    size += sum(len(k) + len(v or b"") for k, v in job.writes.items())
                used.add(job.actor)
            again = await self._round([jobs[i] for i in chosen], chosen, outcomes)
            for index in again:
                self.rounds_rerun += 1
                blind_tries[index] += 1
                if blind_tries[index] > _BLIND_RETRIES:
                    outcomes[index] = StorageUnavailableError(
                        f"{jobs[index].actor} kept changing under this write-only commit "
                        f"at {self.where}; nothing was written"
                    )
            queue = sorted(deferred + [i for i in again if outcomes[i] is None])
        return outcomes

    async def _round(
        self, jobs: list[Job], indices: list[int], outcomes: list[Outcome]
    ) -> list[int]:
        """Run one round; fill in ``outcomes``; return the indices to run again."""
        args = _round_args(jobs)
        committed: set[int] | None = None
        for attempt in range(_ROUND_RETRIES):
            try:
                committed = await self._run_round(args)
                break
            except _Retry as retry:
                self.rounds_rerun += 1
                if attempt == _ROUND_RETRIES - 1:
                    for index in indices:
                        outcomes[index] = retry.error
                    return []
            except KelpieError as exc:
                for index in indices:
                    outcomes[index] = exc
                return []
        assert committed is not None
        again: list[int] = []
        for number, (index, job) in enumerate(zip(indices, jobs, strict=True), start=1):
            if number in committed:
                outcomes[index] = None
            elif job.mode == BLIND:
                again.append(index)
            else:
                outcomes[index] = TransactionConflictError(
                    f"another commit on {job.actor} landed after this transaction read it"
                )
        return again

    async def _run_round(self, args: tuple[list[Any], ...]) -> set[int]:
        pool = await self.pool()
        try:
            conn = await pool.acquire()
        except Exception as exc:
            raise self.error(exc, "committing") from exc
        try:
            if conn.is_closed():
                raise StorageUnavailableError(f"the connection to {self.where} is closed")
            try:
                rows = await conn.fetch(self.sql.commit, *args)
            except Exception as exc:
                if is_retryable(exc):
                    raise _Retry(self.error(exc, "committing")) from exc
                raise self.error(exc, "committing", sent=True) from exc
        finally:
            await _release(pool, conn)
        return {int(row["n"]) for row in rows}

    async def _delete(self, actor: ActorId) -> Outcome:
        """``delete_actor``: its own transaction, holding the deletes counter exclusively."""
        for attempt in range(_ROUND_RETRIES):
            try:
                await self._delete_once(actor)
                return None
            except _Retry as retry:
                if attempt == _ROUND_RETRIES - 1:
                    return retry.error
            except KelpieError as exc:
                return exc
        return None  # pragma: no cover - the loop always returns

    async def _delete_once(self, actor: ActorId) -> None:
        pool = await self.pool()
        try:
            conn = await pool.acquire()
        except Exception as exc:
            raise self.error(exc, "deleting an actor") from exc
        committing = False
        try:
            transaction = conn.transaction()
            try:
                await transaction.start()
                # The counter first: no commit that may create an actor (they hold it
                # shared) runs while this delete does, and this DELETE's snapshot,
                # taken after the lock, sees every commit before it.
                await conn.execute(self.sql.lock_deletes)
                await conn.execute(self.sql.delete_actor, *_parts(actor))
                committing = True
                await transaction.commit()
            except asyncio.CancelledError:
                _terminate(conn)  # a transaction left open: never back to the pool
                raise
            except Exception as exc:
                if not committing:
                    with contextlib.suppress(Exception):
                        await transaction.rollback()
                if is_retryable(exc):
                    raise _Retry(self.error(exc, "deleting an actor")) from exc
                error = self.error(exc, "deleting an actor", sent=committing)
                if isinstance(error, CommitOutcomeUnknownError):
                    _terminate(conn)  # never reuse a connection in an unknown state
                raise error from exc
        finally:
            await _release(pool, conn)


class _Retry(Exception):
    """The server rolled a statement back (deadlock): nothing was written, run it again."""

    def __init__(self, error: KelpieError) -> None:
        super().__init__(str(error))
        self.error = error


async def _release(pool: asyncpg.Pool, conn: Any) -> None:
    try:
        await pool.release(conn)
    except Exception:
        _terminate(conn)


def _terminate(conn: Any) -> None:
    with contextlib.suppress(Exception):  # already released by a dying connection
        conn.terminate()


def _round_args(jobs: list[Job]) -> tuple[list[Any], ...]:
    """The nine arrays of ``sql._commit``: six per job, three per write."""
    ns, ids, modes, incs, vers, seens = [], [], [], [], [], []
    numbers: list[int] = []
    keys: list[bytes] = []
    values: list[bytes | None] = []
    for number, job in enumerate(jobs, start=1):
        namespace, ident = _parts(job.actor)
        seen = job.seen
        ns.append(namespace)
        ids.append(ident)
        modes.append(job.mode)
        incs.append(None if seen is None else seen.incarnation)
        vers.append(None if seen is None else seen.version)
        seens.append(None if seen is None else seen.deletes)
        assert job.writes is not None
        for key, value in job.writes.items():
            numbers.append(number)
            keys.append(key)
            values.append(value)
    return ns, ids, modes, incs, vers, seens, numbers, keys, values
