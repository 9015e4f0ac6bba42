"""The raw baselines: the same writes per invocation with the backend's own client.

What an application would write by hand, without kelpie, for one invocation
of ``BenchActor.write``: read the actor's state, then write the new state and
``keys`` keys as one atomic unit.

- ``memory://``: a dict (for information: it shows the cost of the runtime itself;
  a dict never waits, so its N loops in fact run one after another).
- ``lmdb://``: a py-lmdb write transaction (get the state key, put state + keys,
  commit) on its own environment, with the kelpie URL's ``sync``/``metasync``,
  in a temporary directory beside the store. An asyncio program must keep its
  loop free during the fsync, so each call runs on a worker thread, in an
  executor the size of asyncio's default (what ``asyncio.to_thread`` uses).
- ``sqlite://``: a ``sqlite3`` transaction (``BEGIN IMMEDIATE``, read the state,
  upsert state + keys, ``COMMIT``) on a file of its own in WAL mode, with the
  kelpie URL's ``sync``, in a temporary directory beside the store; each call on
  a worker thread (one connection per thread), as for LMDB.
- ``postgresql://``, ``postgres://``: an ``asyncpg`` pool on the same server and
  database (as many connections as concurrent actors), a table of its own
  (dropped when closed); per invocation one transaction with a version check:
  ``BEGIN``, read the state, compare-and-set it (``UPDATE ... WHERE value =
  <read>``, or ``INSERT`` when absent; 0 rows is a conflict), upsert the keys,
  ``COMMIT``.
- ``redis://``, ``rediss://``, ``unix://``: a ``redis.asyncio`` client on the
  same server and database; per invocation the classic optimistic transaction:
  ``WATCH`` + ``HGET`` of the state, then a ``MULTI``/``HSET``/``EXEC`` pipeline
  writing the state and the keys. Each concurrent task takes its own
  connection from the pool.

Any other scheme has no raw baseline (``open_raw`` returns ``None``). Every
baseline deletes what it wrote when closed. Driver exceptions become
``kelpie.errors`` at this boundary.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from kelpie.bench.scratch import scratch_dir_beside
from kelpie.bench.timing import Call
from kelpie.bench.workload import kv_key
from kelpie.errors import ConfigError, StorageError, StorageUnavailableError
from kelpie.storage.options import as_bool, as_str
from kelpie.storage.url import StorageURL

__all__ = ["RawBaseline", "open_raw"]

_STATE = b"s"
_LMDB_MAP_SIZE = 256 << 20


class RawBaseline(Protocol):
    """The raw client's version of the benchmark's invocation."""

    name: str

    def calls(self, concurrency: int, keys: int) -> list[Call]:
        """One call per actor ``0..concurrency-1``, each doing one invocation's writes."""
        ...

    async def close(self) -> None:
        """Delete everything written and release the client."""
        ...


def open_raw(url: StorageURL, namespace: str) -> RawBaseline | None:
    """The raw baseline for the backend ``url`` names, or ``None`` if there is none."""
    if url.scheme == "memory":
        return DictRaw()
    if url.scheme == "lmdb":
        return LmdbRaw.beside(url)
    if url.scheme == "sqlite":
        return SqliteRaw.beside(url)
    if url.scheme in ("redis", "rediss", "unix"):
        return RedisRaw(url, namespace)
    if url.scheme in ("postgresql", "postgres"):
        return PostgresRaw(url, namespace)
    return None


class DictRaw:
    """``memory://``: a dict per invocation: read the state, write it and the keys."""

    name = "dict"

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    def calls(self, concurrency: int, keys: int) -> list[Call]:
        return [self._call(b"a%d/" % i, keys) for i in range(concurrency)]

    def _call(self, prefix: bytes, keys: int) -> Call:
        data = self._data
        state_key = prefix + _STATE
        kv_keys = [prefix + kv_key(j) for j in range(keys)]

        async def once() -> None:
            value = b"%d" % (int(data.get(state_key, b"0")) + 1)
            data[state_key] = value
            for key in kv_keys:
                data[key] = value

        return once

    async def close(self) -> None:
        self._data.clear()


class LmdbRaw:
    """``lmdb://``: one py-lmdb write transaction per invocation, on a worker thread."""

    name = "py-lmdb txn in a thread"

    def __init__(self, directory: Path, *, sync: bool, metasync: bool) -> None:
        try:
            import lmdb
        except ImportError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise ConfigError(
                "the raw LMDB baseline needs py-lmdb, a dependency of kelpie: "
                "reinstall kelpie (or pip install lmdb)"
            ) from exc
        self._directory = directory
        self._error: type[Exception] = lmdb.Error
        try:
            self._env: Any = lmdb.open(
                str(directory), map_size=_LMDB_MAP_SIZE, sync=sync, metasync=metasync
            )
        except lmdb.Error as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise StorageError(f"the raw LMDB baseline cannot open {directory}: {exc}") from exc
        # The size of asyncio's default executor, which asyncio.to_thread uses.
        workers = min(32, (os.cpu_count() or 1) + 4)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="kelpie-bench-raw")

    @classmethod
    def beside(cls, url: StorageURL) -> LmdbRaw:
        """A fresh environment in a temporary directory next to the store ``url`` names
        (same filesystem, so the same fsync cost), with the URL's durability options."""
        options = url.options
        try:
            sync = as_bool(options.get("sync", True))
            metasync = as_bool(options.get("metasync", True))
        except ValueError as exc:
            raise ConfigError(f"bad sync option in the lmdb:// URL: {exc}") from None
        return cls(scratch_dir_beside(url, ".kelpie-bench-raw-"), sync=sync, metasync=metasync)

    def calls(self, concurrency: int, keys: int) -> list[Call]:
        return [self._call(b"a%d/" % i, keys) for i in range(concurrency)]

    def _call(self, prefix: bytes, keys: int) -> Call:
        env, executor, error = self._env, self._executor, self._error
        state_key = prefix + _STATE
        kv_keys = [prefix + kv_key(j) for j in range(keys)]

        def write() -> None:
            with env.begin(write=True) as txn:
                value = b"%d" % (int(txn.get(state_key) or b"0") + 1)
                txn.put(state_key, value)
                for key in kv_keys:
                    txn.put(key, value)

        async def once() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(executor, write)
            except error as exc:
                raise StorageError(f"the raw LMDB baseline failed: {exc}") from exc

        return once

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._env.close()
        shutil.rmtree(self._directory, ignore_errors=True)


class SqliteRaw:
    """``sqlite://``: one ``sqlite3`` transaction per invocation, on a worker thread."""

    name = "sqlite3 txn in a thread"

    _UPSERT = "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v"

    def __init__(self, directory: Path, *, sync: str) -> None:
        self._directory = directory
        self._path = str(directory / "raw.db")
        self._sync = sync
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            db = self._connection()
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL)")
        except sqlite3.Error as exc:
            self._close_connections()
            shutil.rmtree(directory, ignore_errors=True)
            raise StorageError(f"the raw SQLite baseline cannot open {self._path}: {exc}") from exc
        workers = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor size
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="kelpie-bench-raw")

    @classmethod
    def beside(cls, url: StorageURL) -> SqliteRaw:
        """A fresh file in a temporary directory next to the store ``url`` names."""
        sync = as_str(url.options.get("sync", "full")).strip().lower()
        if sync not in ("full", "normal"):
            raise ConfigError("bad sync option in the sqlite:// URL: full or normal")
        return cls(scratch_dir_beside(url, ".kelpie-bench-raw-"), sync=sync)

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self._path, timeout=60, isolation_level=None, check_same_thread=False
            )
            db.execute(f"PRAGMA synchronous = {self._sync.upper()}")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def calls(self, concurrency: int, keys: int) -> list[Call]:
        return [self._call(b"a%d/" % i, keys) for i in range(concurrency)]

    def _call(self, prefix: bytes, keys: int) -> Call:
        executor, upsert = self._executor, self._UPSERT
        state_key = prefix + _STATE
        kv_keys = [prefix + kv_key(j) for j in range(keys)]

        def write() -> None:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT v FROM kv WHERE k = ?", (state_key,)).fetchall()
                value = b"%d" % (int(row[0][0] if row else b"0") + 1)
                db.executemany(upsert, [(state_key, value), *((key, value) for key in kv_keys)])
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

        async def once() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(executor, write)
            except sqlite3.Error as exc:
                raise StorageError(f"the raw SQLite baseline failed: {exc}") from exc

        return once

    def _close_connections(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._close_connections()
        shutil.rmtree(self._directory, ignore_errors=True)


class RedisRaw:
    """``redis://``: ``WATCH``/``HGET`` then ``MULTI``/``HSET``/``EXEC`` with redis.asyncio."""

    name = "redis-py WATCH+MULTI/EXEC"

    def __init__(self, url: StorageURL, namespace: str) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.exceptions import RedisError
        except ImportError as exc:
            raise ConfigError(
                "the raw Redis baseline needs redis-py: pip install 'kelpie[redis]'"
            ) from exc
        self._error: type[Exception] = RedisError
        self._where = url.render()
        self._prefix = f"{namespace}-raw:".encode()
        self._written: set[bytes] = set()
        options = url.options
        common: dict[str, Any] = {
            "username": url.username,
            "password": url.password,
            "socket_timeout": float(options.get("socket_timeout", 5.0)),
            "socket_connect_timeout": float(options.get("connect_timeout", 2.0)),
        }
        if url.scheme == "unix":
            self._client: Any = aioredis.Redis(
                unix_socket_path=url.path, db=int(options.get("db", "0")), **common
            )
        else:
            db_text = url.path.strip("/")
            extra: dict[str, Any] = {}
            if url.scheme == "rediss":
                cert_reqs = options.get("ssl_cert_reqs", "required")
                extra = {"ssl": True, "ssl_cert_reqs": cert_reqs}
                extra["ssl_check_hostname"] = cert_reqs == "required"
                if "ssl_ca_certs" in options:
                    extra["ssl_ca_certs"] = options["ssl_ca_certs"]
            self._client = aioredis.Redis(
                host=url.host or "localhost",
                port=url.port or 6379,
                db=int(db_text) if db_text else 0,
                **common,
                **extra,
            )

    def calls(self, concurrency: int, keys: int) -> list[Call]:
        return [self._call(self._prefix + b"a%d" % i, keys) for i in range(concurrency)]

    def _call(self, key: bytes, keys: int) -> Call:
        client, error, where = self._client, self._error, self._where
        fields = [kv_key(j) for j in range(keys)]
        self._written.add(key)

        async def once() -> None:
            try:
                async with client.pipeline(transaction=True) as pipe:
                    await pipe.watch(key)
                    value = b"%d" % (int(await pipe.hget(key, _STATE) or b"0") + 1)
                    pipe.multi()
                    mapping = dict.fromkeys(fields, value)
                    mapping[_STATE] = value
                    pipe.hset(key, mapping=mapping)
                    await pipe.execute()
            except error as exc:
                raise StorageUnavailableError(
                    f"the raw Redis baseline failed on {where}: {type(exc).__name__}"
                ) from exc

        return once

    async def close(self) -> None:
        try:
            if self._written:
                await self._client.delete(*sorted(self._written))
        except self._error as exc:
            raise StorageUnavailableError(
                f"the raw Redis baseline could not delete its keys on {self._where}"
            ) from exc
        finally:
            await self._client.aclose()


class PostgresRaw:
    """``postgresql://``: one asyncpg transaction with a version check per invocation."""

    name = "asyncpg txn per commit"

    def __init__(self, url: StorageURL, namespace: str) -> None:
        try:
            import asyncpg
        except ImportError as exc:
            raise ConfigError(
                "the raw PostgreSQL baseline needs asyncpg: pip install 'kelpie[postgres]'"
            ) from exc
        from kelpie.storage.postgres.sql import quote_ident
        from kelpie.storage.postgres.url import postgres_options

        self._asyncpg: Any = asyncpg
        self._options = postgres_options(url, {})
        self._where = self._options.where
        self._table = quote_ident(f"kelpie_bench_raw_{namespace}"[:56])
        self._pool: Any = None
        self._pool_size = 0  # connections of self._pool
        self._size = 0  # connections wanted: the largest concurrency asked for so far
        self._lock = asyncio.Lock()

    async def _ready(self) -> Any:
        if self._pool is not None and self._pool_size >= self._size:
            return self._pool
        async with self._lock:
            if self._pool is not None and self._pool_size < self._size:
                old, self._pool = self._pool, None  # too small: one connection per actor
                await old.close()
            if self._pool is None:
                self._pool_size = max(self._size, 1)
                o = self._options
                self._pool = await self._asyncpg.create_pool(
                    host=o.host,
                    port=o.port,
                    user=o.user,
                    password=o.password,
                    database=o.database,
                    ssl=o.sslmode,
                    timeout=o.connect_timeout,
                    min_size=self._pool_size,
                    max_size=self._pool_size,
                )
                await self._pool.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._table} (actor bytea NOT NULL, "
                    "key bytea NOT NULL, value bytea NOT NULL, PRIMARY KEY (actor, key))"
                )
        return self._pool

    def calls(self, concurrency: int, keys: int) -> list[Call]:
        self._size = max(self._size, concurrency)
        return [self._call(b"a%d" % i, keys) for i in range(concurrency)]

    def _call(self, actor: bytes, keys: int) -> Call:
        t = self._table
        read = f"SELECT value FROM {t} WHERE actor = $1 AND key = $2"
        create = f"INSERT INTO {t} (actor, key, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        swap = f"UPDATE {t} SET value = $3 WHERE actor = $1 AND key = $2 AND value = $4"
        upsert = (
            f"INSERT INTO {t} (actor, key, value) SELECT $1, k, $3 FROM unnest($2::bytea[]) k "
            "ON CONFLICT (actor, key) DO UPDATE SET value = excluded.value"
        )
        kv_keys = [kv_key(j) for j in range(keys)]

        async def once() -> None:
            pool = await self._ready()
            try:
                async with pool.acquire() as conn, conn.transaction():
                    current = await conn.fetchval(read, actor, _STATE)
                    value = b"%d" % (int(current or b"0") + 1)
                    if current is None:
                        status = await conn.execute(create, actor, _STATE, value)
                    else:
                        status = await conn.execute(swap, actor, _STATE, value, current)
                    if status.endswith(" 0"):
                        raise StorageError("the raw PostgreSQL baseline's version check failed")
                    if kv_keys:
                        await conn.execute(upsert, actor, kv_keys, value)
            except (OSError, self._asyncpg.PostgresError, self._asyncpg.InterfaceError) as exc:
                raise StorageUnavailableError(
                    f"the raw PostgreSQL baseline failed on {self._where}: {type(exc).__name__}"
                ) from exc

        return once

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await pool.execute(f"DROP TABLE IF EXISTS {self._table}")
        except (OSError, self._asyncpg.PostgresError, self._asyncpg.InterfaceError) as exc:
            raise StorageUnavailableError(
                f"the raw PostgreSQL baseline could not drop its table on {self._where}"
            ) from exc
        finally:
            await pool.close()
