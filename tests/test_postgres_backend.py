"""postgresql://: URL and options, the table's layout, index use, batches, lifecycle, errors.

Everything runs against a real PostgreSQL (``kelpie.testing.postgres_server``);
the conformance suite and the runtime tests run on it too (backend ``postgres``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from kelpie import ActorId, open_storage
from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    CorruptStateError,
    StorageUnavailableError,
    TransactionConflictError,
)
from kelpie.storage.postgres import SCHEMA_VERSION, PostgresStorage
from kelpie.storage.postgres.sql import Statements, quote_ident
from kelpie.testing.postgres_server import PostgresServer, missing_postgres

pytestmark = pytest.mark.skipif(missing_postgres() is not None, reason=str(missing_postgres()))

A = ActorId("bank", "alice")


def _table() -> str:
    return f"t_{secrets.token_hex(5)}"


@pytest.fixture
async def raw(postgres_server: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(**postgres_server.connect_kwargs)
    yield conn
    await conn.close()


@pytest.fixture
async def pg(postgres_server: PostgresServer) -> AsyncIterator[PostgresStorage]:
    storage = open_storage(postgres_server.url(table=_table()))
    assert isinstance(storage, PostgresStorage)
    yield storage
    await storage.close()


# -- URL and options ---------------------------------------------------------------


def test_both_schemes_open_with_defaults_and_no_io() -> None:
    for scheme in ("postgresql", "postgres"):
        storage = open_storage(f"{scheme}://u:secret@db.example:6543/app")
        assert isinstance(storage, PostgresStorage)
        o = storage.options
        assert (o.host, o.port, o.database, o.user, o.table) == (
            "db.example",
            6543,
            "app",
            "u",
            "kelpie",
        )
        assert (o.sslmode, o.pool_min, o.pool_max, o.statement_timeout) == ("prefer", 0, 10, 0)
        assert "secret" not in repr(storage) and "secret" not in repr(o)


def test_options_from_the_url_and_keywords() -> None:
    storage = open_storage(
        "postgresql://h/db?table=My Table&sslmode=require&pool_min=2&pool_max=5"
        "&statement_timeout=1500&connect_timeout=2.5",
        max_batch=7,
    )
    assert isinstance(storage, PostgresStorage)
    o = storage.options
    assert (o.table, o.sslmode, o.pool_min, o.pool_max) == ("My Table", "require", 2, 5)
    assert (o.statement_timeout, o.connect_timeout, o.max_batch) == (1500, 2.5, 7)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("postgresql://h/db?nope=1", ["'nope'", "table", "sslmode", "pool_max"]),
        ("postgresql://h/db?sslmode=sometimes", ["sslmode", "verify-full"]),
        ("postgresql:///db", ["host"]),
        ("postgresql://h", ["database name"]),
        ("postgresql://h/db?pool_min=5&pool_max=2", ["pool_min"]),
        ("postgresql://h/db?table=", ["table"]),
        ("postgresql://h/db?table=" + "x" * 57, ["at most 56 bytes"]),
        ("postgresql://h/db?statement_timeout=-1", ["statement_timeout"]),
    ],
)
def test_bad_urls_and_options_raise_config_error_naming_them(url: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    for word in words:
        assert word in str(info.value)


async def test_a_wrong_password_is_a_config_error_that_never_shows_it(
    postgres_server: PostgresServer,
) -> None:
    bad = "wrong-" + secrets.token_hex(6)
    storage = open_storage(f"postgresql://kelpie:{bad}@127.0.0.1:{postgres_server.port}/postgres")
    try:
        with pytest.raises(ConfigError) as info:
            await storage.get(A, b"k")
    finally:
        await storage.close()
    assert bad not in str(info.value) and bad not in repr(storage)
    assert info.value.__cause__ is not None  # chained from asyncpg's error


async def test_a_unix_socket_directory_as_host(postgres_server: PostgresServer) -> None:
    directory, port = postgres_server.directory, postgres_server.port
    url = f"postgresql://kelpie@:{port}/postgres?host={directory}&table={_table()}"
    storage = open_storage(url)  # local connections are trusted: no password
    try:
        await storage.set(A, b"k", b"unix")
        assert await storage.get(A, b"k") == b"unix"
        assert f"host={postgres_server.directory}" in repr(storage)
    finally:
        await storage.close()


async def test_an_unreachable_server_is_unavailable_and_hides_the_password() -> None:
    with socket.socket() as sock:  # a free port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage = open_storage(f"postgresql://kelpie:hunter2@127.0.0.1:{port}/db?connect_timeout=2")
    try:
        with pytest.raises(StorageUnavailableError) as info:
            await storage.get(A, b"k")
    finally:
        await storage.close()
    assert "hunter2" not in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


# -- the table -------------------------------------------------------------------


async def test_the_table_is_created_with_its_exact_name_and_a_schema_version_row(
    postgres_server: PostgresServer, raw: asyncpg.Connection
) -> None:
    name = f'Odd "name" {secrets.token_hex(3)}'
    storage = open_storage(postgres_server.url(table=name))
    try:
        await storage.set(A, b"k", b"v")
    finally:
        await storage.close()
    t = quote_ident(name)
    version = await raw.fetchval(Statements.for_table(name).schema_version)
    assert version == SCHEMA_VERSION
    rows = await raw.fetch(f"SELECT namespace, id, key, value FROM {t} WHERE key = 'k'::bytea")
    assert [tuple(r) for r in rows] == [(b"bank", b"alice", b"k", b"v")]
    types = await raw.fetch(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1",
        name,
    )
    assert {r["column_name"]: r["data_type"] for r in types}["value"] == "bytea"


async def test_a_table_with_a_newer_schema_version_is_refused(
    postgres_server: PostgresServer, raw: asyncpg.Connection
) -> None:
    name = _table()
    storage = open_storage(postgres_server.url(table=name))
    await storage.set(A, b"k", b"v")
    await storage.close()
    await raw.execute(
        f"UPDATE {quote_ident(name)} SET version = 99 WHERE key = 'schema_version'::bytea"
    )
    again = open_storage(postgres_server.url(table=name))
    try:
        with pytest.raises(ConfigError, match="schema version 99"):
            await again.get(A, b"k")
    finally:
        await again.close()


async def test_list_keys_and_list_actors_are_index_range_scans(
    pg: PostgresStorage, raw: asyncpg.Connection
) -> None:
    await pg.set(ActorId("ns", "a0007"), b"k001", b"v")  # creates the table
    t = quote_ident(pg.table)
    # 5,000 actors of 5 keys each, written directly: enough rows for the planner to care.
    await raw.execute(
        f"""INSERT INTO {t} (namespace, id, key, value, incarnation, version)
        SELECT 'ns'::bytea, convert_to('a' || lpad(i::text, 4, '0'), 'UTF8'), k.key,
               CASE WHEN k.key = '\\x'::bytea THEN NULL ELSE 'v'::bytea END,
               CASE WHEN k.key = '\\x'::bytea THEN 0 END, CASE WHEN k.key = '\\x'::bytea THEN 1 END
        FROM generate_series(0, 4999) i,
             (VALUES ('\\x'::bytea), ('k000'), ('k001'), ('k002'), ('k003'), ('k004')) k(key)
        ON CONFLICT DO NOTHING"""
    )
    await raw.execute(f"ANALYZE {t}")
    sql = Statements.for_table(pg.table)
    plans = {
        "list_keys": await raw.fetch(
            "EXPLAIN " + sql.list_keys_below, b"ns", b"a0007", b"k00", b"k01"
        ),
        "list_actors": await raw.fetch("EXPLAIN " + sql.list_actors_after, 10, b"ns", b"a0010"),
    }
    for name, rows in plans.items():
        plan = "\n".join(r[0] for r in rows)
        print(name, plan)
        assert "Seq Scan" not in plan, plan
        assert "Index" in plan, plan
    assert await pg.list_keys(ActorId("ns", "a0007"), b"k00") == [b"k00%d" % j for j in range(5)]
    page = await pg.list_actors("ns", after=ActorId("ns", "a0010"), limit=3)
    assert page == [ActorId("ns", f"a{i:04d}") for i in (11, 12, 13)]


async def test_a_listing_page_walks_the_index_even_with_stale_statistics(
    pg: PostgresStorage, raw: asyncpg.Connection
) -> None:
    """Right after a bulk load, before any ANALYZE, the planner may judge the table
    tiny and sort every remaining header row for each page (a quadratic listing).
    kelpie plans its listing pages with sorts priced out: each page reads about a
    page of the header index, whatever the statistics say."""
    await pg.set(ActorId("ns", "a00000"), b"k", b"v")  # creates the table: a few rows
    t = quote_ident(pg.table)
    await raw.execute(f"ALTER TABLE {t} SET (autovacuum_enabled = false)")
    await raw.execute(
        f"""INSERT INTO {t} (namespace, id, key, value, incarnation, version)
        SELECT 'ns'::bytea, convert_to('a' || lpad(i::text, 5, '0'), 'UTF8'), k.key,
               CASE WHEN k.key = '\\x'::bytea THEN NULL ELSE 'v'::bytea END,
               CASE WHEN k.key = '\\x'::bytea THEN 0 END,
               CASE WHEN k.key = '\\x'::bytea THEN 1 END
        FROM generate_series(1, 20000) i, (VALUES ('\\x'::bytea), ('k')) k(key)"""
    )
    statement = Statements.for_table(pg.table).list_actors_after
    explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + statement
    async with raw.transaction(readonly=True):
        await raw.execute("SET LOCAL enable_sort = off")  # what kelpie's listing does
        (row,) = await raw.fetch(explain, 100, b"ns", b"a00100")
    plan = json.loads(row[0])[0]["Plan"]
    print(json.dumps(plan)[:2000])
    assert "Sort" not in json.dumps(plan)

    def most_rows(node: dict[str, Any]) -> int:
        return int(
            max([node["Actual Rows"], *(most_rows(child) for child in node.get("Plans", []))])
        )

    assert most_rows(plan) <= 101  # a page, not the 19,900 header rows after a00100
    page = await pg.list_actors("ns", after=ActorId("ns", "a00100"), limit=100)
    assert page == [ActorId("ns", f"a{i:05d}") for i in range(101, 201)]


# -- batches and the fence -----------------------------------------------------------


async def test_one_stale_commit_never_fails_its_batch_mates(pg: PostgresStorage) -> None:
    stale = pg.transaction(A)
    await stale.get(b"n")
    await pg.set(A, b"n", b"1")  # the stale transaction's read is now outdated
    await stale.set(b"n", b"stale")
    others = [pg.transaction(ActorId("bank", f"b{i}")) for i in range(20)]
    for number, txn in enumerate(others):
        await txn.get(b"n")
        await txn.set(b"n", b"%d" % number)
    before = pg.batch_stats
    results = await asyncio.gather(
        stale.commit(), *(txn.commit() for txn in others), return_exceptions=True
    )
    after = pg.batch_stats
    assert isinstance(results[0], TransactionConflictError)
    assert results[1:] == [None] * 20
    assert after[1] - before[1] == 21 and after[0] - before[0] < 21  # batched
    assert await pg.get(A, b"n") == b"1"
    for number in range(20):
        assert await pg.get(ActorId("bank", f"b{number}"), b"n") == b"%d" % number


async def test_concurrent_reads_share_statements_and_each_sees_its_own_actor(
    pg: PostgresStorage,
) -> None:
    actors = [ActorId("bank", f"r{i}") for i in range(50)]
    await asyncio.gather(*(pg.set(a, b"n", b"%d" % i) for i, a in enumerate(actors)))
    reads = pg._db._reads
    before = (reads.batches, reads.items)

    async def read(actor: ActorId) -> bytes | None:
        async with pg.transaction(actor) as txn:
            return await txn.get(b"n")

    values = await asyncio.gather(*(read(a) for a in actors), read(ActorId("bank", "none")))
    assert values == [b"%d" % i for i in range(50)] + [None]
    batches, items = reads.batches - before[0], reads.items - before[1]
    assert items == 51 and batches < 51  # one statement answered many reads


async def test_two_commits_on_one_actor_in_one_batch_apply_in_order(pg: PostgresStorage) -> None:
    await asyncio.gather(*(pg.set(A, b"k%d" % i, b"%d" % i) for i in range(30)))
    assert await pg.list_keys(A) == sorted(b"k%d" % i for i in range(30))


async def test_versions_never_repeat_after_delete_actor(pg: PostgresStorage) -> None:
    await pg.set(A, b"n", b"1")
    writer = pg.transaction(A)
    reader = pg.transaction(A)
    assert await writer.get(b"n") == b"1"
    assert await reader.get(b"n") == b"1"
    await pg.delete_actor(A)
    await pg.set(A, b"n", b"1")  # created again with as many commits as before
    await writer.set(b"n", b"2")
    with pytest.raises(TransactionConflictError):
        await writer.commit()
    with pytest.raises(TransactionConflictError):
        await reader.commit()  # read-only: validated against (incarnation, version)
    assert await pg.get(A, b"n") == b"1"


async def test_a_read_of_an_absent_actor_conflicts_with_a_create_and_delete_since(
    pg: PostgresStorage,
) -> None:
    txn = pg.transaction(A)
    assert await txn.get(b"n") is None
    await pg.set(A, b"n", b"1")
    await pg.delete_actor(A)
    await txn.set(b"n", b"mine")
    with pytest.raises(TransactionConflictError):
        await txn.commit()
    assert await pg.list_actors("bank") == []


async def test_delete_actor_leaves_no_row_behind(
    pg: PostgresStorage, raw: asyncpg.Connection
) -> None:
    await pg.set(A, b"n", b"1")
    await pg.delete_actor(A)
    await pg.delete_actor(A)  # absent: nothing to do
    left = await raw.fetchval(
        f"SELECT count(*) FROM {quote_ident(pg.table)} WHERE namespace = 'bank'::bytea"
    )
    assert left == 0


async def test_an_actor_whose_keys_were_all_deleted_is_not_listed(pg: PostgresStorage) -> None:
    await pg.set(A, b"n", b"1")
    await pg.delete(A, b"n")
    assert await pg.list_actors() == []


# -- errors ------------------------------------------------------------------------


async def test_a_header_row_of_no_valid_actor_is_corrupt_state(
    pg: PostgresStorage, raw: asyncpg.Connection
) -> None:
    await pg.set(A, b"k", b"v")
    await raw.execute(
        f"INSERT INTO {quote_ident(pg.table)} (namespace, id, key, value, incarnation, version)"
        " VALUES ('\\xff'::bytea, 'x'::bytea, '\\x'::bytea, NULL, 0, 1),"
        " ('\\xff'::bytea, 'x'::bytea, 'k'::bytea, 'v'::bytea, NULL, NULL)"
    )
    with pytest.raises(CorruptStateError, match="something other than kelpie"):
        await pg.list_actors()


async def test_a_statement_timeout_is_unavailable_and_writes_nothing(
    postgres_server: PostgresServer, raw: asyncpg.Connection
) -> None:
    table = _table()
    storage = open_storage(postgres_server.url(table=table, statement_timeout="300"))
    try:
        await storage.set(A, b"n", b"1")
        txn = storage.transaction(A)
        await txn.get(b"n")
        await txn.set(b"n", b"2")
        async with raw.transaction():  # hold the actor's header row: the commit must wait
            await raw.execute(
                f"SELECT 1 FROM {quote_ident(table)} WHERE namespace = 'bank'::bytea "
                f"AND id = 'alice'::bytea AND key = '\\x'::bytea FOR UPDATE"
            )
            with pytest.raises(StorageUnavailableError, match="nothing was written") as info:
                await txn.commit()
        assert isinstance(info.value.__cause__, asyncpg.QueryCanceledError)
        assert await storage.get(A, b"n") == b"1"
    finally:
        await storage.close()


async def test_a_commit_past_command_timeout_is_outcome_unknown_and_the_storage_carries_on(
    postgres_server: PostgresServer, raw: asyncpg.Connection
) -> None:
    # kelpie stops waiting (a silent network would look the same): it cannot know
    # whether the server will still commit, so it says so.
    table = _table()
    storage = open_storage(postgres_server.url(table=table, command_timeout="0.3"))
    try:
        await storage.set(A, b"n", b"1")
        async with raw.transaction():
            await raw.execute(
                f"SELECT 1 FROM {quote_ident(table)} WHERE namespace = 'bank'::bytea "
                f"AND id = 'alice'::bytea AND key = '\\x'::bytea FOR UPDATE"
            )
            with pytest.raises(CommitOutcomeUnknownError):
                await storage.set(A, b"n", b"2")
        assert await storage.get(A, b"n") in (b"1", b"2")
        await storage.set(A, b"n", b"3")
        assert await storage.get(A, b"n") == b"3"
    finally:
        await storage.close()


async def test_a_stopped_server_is_unavailable_then_the_storage_recovers() -> None:
    with PostgresServer() as server:
        storage = open_storage(server.url(table="t", connect_timeout="2"))
        try:
            await storage.set(A, b"n", b"1")
            server.stop()
            for _ in range(2):
                with pytest.raises(StorageUnavailableError) as info:
                    await storage.get(A, b"n")
                assert not type(info.value.__cause__).__module__.startswith("kelpie")
            server.start()
            assert await storage.get(A, b"n") == b"1"
            await storage.set(A, b"n", b"2")
            assert await storage.get(A, b"n") == b"2"
        finally:
            await storage.close()


async def test_write_only_commits_from_two_storages_on_one_actor_all_land(
    postgres_server: PostgresServer, raw: asyncpg.Connection
) -> None:
    # Two storages act like two processes: their batches race for the actor's header.
    # A write-only commit never conflicts: when the other one moved the header during
    # its statement it wrote nothing and goes again, so every one of them lands once.
    table = _table()
    url = postgres_server.url(table=table)
    first, second = open_storage(url), open_storage(url)
    assert isinstance(first, PostgresStorage) and isinstance(second, PostgresStorage)
    try:
        await first.set(A, b"x", b"0")

        async def blind(storage: PostgresStorage, number: int) -> None:
            async with storage.transaction(A) as txn:
                await txn.set(b"x", b"%d" % number)
                await txn.set(b"k%d" % number, b"1")
                await txn.delete(b"k%d" % (number - 1))

        await asyncio.gather(*(blind(s, n) for n in range(1, 61) for s in (first, second)))
        version = await raw.fetchval(
            f"SELECT version FROM {quote_ident(table)} WHERE namespace = 'bank'::bytea "
            "AND id = 'alice'::bytea AND key = '\\x'::bytea"
        )
        print("reruns", first._db.rounds_rerun, second._db.rounds_rerun)
        assert version == 121  # the first set and 120 write-only commits, none lost
        keys = await first.list_keys(A)
        assert b"x" in keys and len(keys) >= 2
    finally:
        await first.close()
        await second.close()


async def _waiting_for_locks(raw: asyncpg.Connection, count: int) -> None:
    for _ in range(1000):
        waiting = await raw.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} sessions never waited for a lock")


async def test_a_delete_behind_a_commit_in_flight_sees_the_records_it_wrote(
    postgres_server: PostgresServer, raw: asyncpg.Connection
) -> None:
    # A commit in flight holds the deletes row shared; a delete_actor arriving then
    # waits for it, and its DELETE (a new snapshot) removes the new records too.
    table = _table()
    url = postgres_server.url(table=table)
    writer, deleter = open_storage(url), open_storage(url)
    blocker = await asyncpg.connect(**postgres_server.connect_kwargs)
    try:
        await writer.set(A, b"old", b"1")
        assert await deleter.get(A, b"old") == b"1"  # its pool and schema check are done
        header = (
            f"SELECT 1 FROM {quote_ident(table)} WHERE namespace = 'bank'::bytea "
            "AND id = 'alice'::bytea AND key = '\\x'::bytea FOR UPDATE"
        )
        async with blocker.transaction():
            await blocker.execute(header)  # the commit below waits for this row
            commit = asyncio.create_task(writer.set(A, b"new", b"2"))
            await _waiting_for_locks(raw, 1)
            delete = asyncio.create_task(deleter.delete_actor(A))
            await _waiting_for_locks(raw, 2)
        await commit
        await delete
        assert await writer.list_keys(A) == []
        assert await writer.list_actors("bank") == []
        left = await raw.fetchval(
            f"SELECT count(*) FROM {quote_ident(table)} WHERE namespace = 'bank'::bytea"
        )
        assert left == 0  # no record outlived the header
    finally:
        await blocker.close()
        await writer.close()
        await deleter.close()


async def test_deletes_racing_commits_from_another_storage_leave_no_orphan_record(
    postgres_server: PostgresServer, raw: asyncpg.Connection
) -> None:
    # A delete must see every record a concurrent commit wrote (the deletes row is
    # held shared by every batch): no record may outlive its actor's header.
    table = _table()
    url = postgres_server.url(table=table)
    writer, deleter = open_storage(url), open_storage(url)
    actors = [ActorId("race", f"a{i}") for i in range(4)]
    outcomes: dict[str, int] = {}
    try:
        await writer.set(actors[0], b"seed", b"1")

        async def write(number: int) -> None:
            actor = actors[number % len(actors)]
            try:
                async with writer.transaction(actor) as txn:
                    if number % 2:
                        await txn.get(b"seed")
                    await txn.set(b"k%d" % number, b"v")
                    await txn.set(b"seed", b"%d" % number)
            except TransactionConflictError:
                outcomes["conflict"] = outcomes.get("conflict", 0) + 1
            else:
                outcomes["ok"] = outcomes.get("ok", 0) + 1

        async def delete(number: int) -> None:
            await deleter.delete_actor(actors[number % len(actors)])
            outcomes["deleted"] = outcomes.get("deleted", 0) + 1

        waves = 10
        for wave in range(waves):
            await asyncio.gather(
                *(write(wave * 40 + n) for n in range(40)),
                *(delete(wave * 3 + n) for n in range(3)),
            )
        orphans = await raw.fetchval(
            f"SELECT count(*) FROM {quote_ident(table)} r WHERE r.namespace <> '\\x'::bytea "
            f"AND r.key <> '\\x'::bytea AND NOT EXISTS (SELECT 1 FROM {quote_ident(table)} h "
            "WHERE h.namespace = r.namespace AND h.id = r.id AND h.key = '\\x'::bytea)"
        )
        print(outcomes)
        assert outcomes["ok"] > 0 and outcomes["deleted"] == 3 * waves
        assert orphans == 0
        for actor in actors:  # what is listed is what is readable
            assert (actor in await writer.list_actors("race")) == bool(
                await writer.list_keys(actor)
            )
    finally:
        await writer.close()
        await deleter.close()
