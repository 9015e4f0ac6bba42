"""How the test plugin opens each built-in backend, or a user's storage URL.

A ``StoreHandle`` names one underlying store (a named memory store, a
``fakeredis.FakeServer``, a key prefix on a real redis-server, an LMDB
directory, or a user's URL) and opens as many ``Storage`` objects on it as a
test wants: reopening after ``close`` checks durability, and two open at once
act like two processes sharing the store. Opening does no I/O.
"""

from __future__ import annotations

import importlib.util
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kelpie.storage.protocol import Storage
from kelpie.storage.registry import open_storage
from kelpie.storage.url import StorageURL

if TYPE_CHECKING:
    from kelpie.testing.postgres_server import PostgresServer
    from kelpie.testing.redis_server import RedisServer

__all__ = [
    "BUILTIN_BACKENDS",
    "StoreHandle",
    "builtin_handle",
    "missing_requirement",
    "url_handle",
    "url_id",
]

BUILTIN_BACKENDS: tuple[str, ...] = (
    "memory",
    "fakeredis",
    "redis",
    "redis-multi",
    "lmdb",
    "sqlite",
    "postgres",
)
"""The backends the suite runs against when no ``--storage-url`` is given."""


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_requirement(backend: str) -> str | None:
    """Why ``backend`` cannot run here (a skip reason), or ``None`` if it can."""
    needs: dict[str, list[tuple[str, str]]] = {
        "memory": [],
        "fakeredis": [("redis", "redis"), ("fakeredis", "fakeredis")],
        "redis": [("redis", "redis")],
        "redis-multi": [("redis", "redis")],
        "lmdb": [("lmdb", "lmdb")],
        "sqlite": [],
        "postgres": [("asyncpg", "asyncpg")],
    }
    for module, package in needs[backend]:
        if not _has_module(module):
            return (
                f"{backend}: the {package!r} package is not installed: pip install 'kelpie[test]'"
            )
    module_for = {"redis": "kelpie.storage.redis", "lmdb": "kelpie.storage.lmdb"}
    if backend in ("redis", "redis-multi", "fakeredis") and not _has_module(module_for["redis"]):
        return f"{backend}: kelpie.storage.redis is not available"
    if backend == "lmdb" and not _has_module(module_for["lmdb"]):
        return "lmdb: kelpie.storage.lmdb is not available"
    if backend == "sqlite" and not _has_module("sqlite3"):
        return "sqlite: this Python was built without the sqlite3 module"
    if backend == "postgres":
        from kelpie.testing.postgres_server import missing_postgres

        return missing_postgres()
    if backend in ("redis", "redis-multi") and shutil.which("redis-server") is None:
        return f"{backend}: no redis-server executable on PATH"
    return None


class StoreHandle:
    """One underlying store; ``open()`` returns a new ``Storage`` object on it."""

    def __init__(
        self,
        name: str,
        opener: Callable[[], Storage],
        cleanup: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._opener = opener
        self._cleanup = cleanup

    def open(self) -> Storage:
        """A new, open ``Storage`` on this store (no I/O until first use)."""
        return self._opener()

    def cleanup(self) -> None:
        """Forget the store where the harness owns it (memory, temp dirs); idempotent."""
        cleanup, self._cleanup = self._cleanup, None
        if cleanup is not None:
            cleanup()

    def __repr__(self) -> str:
        return f"StoreHandle({self.name})"


def _unique(label: str) -> str:
    return f"kelpie-test-{label}-{uuid.uuid4().hex[:12]}"


def _memory_handle() -> StoreHandle:
    name = _unique("memory")

    def forget() -> None:
        # Named memory stores live for the whole process; drop this test's one
        # so large values written by the suite do not accumulate.
        from kelpie.storage import memory

        named: dict[str, Any] = getattr(memory, "_named_stores", {})
        named.pop(name, None)

    return StoreHandle("memory", lambda: open_storage(f"memory://{name}"), forget)


def _fakeredis_handle() -> StoreHandle:
    import fakeredis
    from redis.asyncio.connection import BlockingConnectionPool

    from kelpie.storage.redis.storage import RedisStorage

    server = fakeredis.FakeServer()
    prefix = _unique("fake")

    def opener() -> Storage:
        # A blocking pool of 100, like open_redis: callers wait for a connection.
        client = fakeredis.FakeAsyncRedis(
            server=server, connection_pool_class=BlockingConnectionPool, max_connections=100
        )
        return RedisStorage(client, prefix=prefix)

    return StoreHandle("fakeredis", opener)


def _redis_handle(server: RedisServer, commit: str = "script") -> StoreHandle:
    """A fresh prefix on the shared server; ``commit="multi"``: WATCH/MULTI/EXEC (ADR 0011)."""
    name = "redis" if commit == "script" else f"redis-{commit}"
    prefix = _unique(name)
    url = server.url
    return StoreHandle(name, lambda: open_storage(url, prefix=prefix, commit=commit))


def _lmdb_handle(directory: Path) -> StoreHandle:
    path = directory / "lmdb"
    return StoreHandle("lmdb", lambda: open_storage(f"lmdb://{path}"))


def _sqlite_handle(directory: Path) -> StoreHandle:
    path = directory / "sqlite" / "kelpie.db"
    return StoreHandle("sqlite", lambda: open_storage(f"sqlite://{path}"))


def _postgres_handle(server: PostgresServer) -> StoreHandle:
    """A fresh table on the shared server (tables die with the server)."""
    url = server.url(table=_unique("pg").replace("-", "_"))
    return StoreHandle("postgres", lambda: open_storage(url))


def builtin_handle(
    backend: str,
    *,
    tmp_path: Path,
    redis_server: Callable[[], RedisServer],
    postgres_server: Callable[[], PostgresServer] | None = None,
) -> StoreHandle:
    """A fresh store of a built-in test backend.

    ``redis_server`` is called only for the ``redis`` backends, and
    ``postgres_server`` only for ``postgres``, so each shared server starts on
    first need.
    """
    if backend == "memory":
        return _memory_handle()
    if backend == "fakeredis":
        return _fakeredis_handle()
    if backend == "redis":
        return _redis_handle(redis_server())
    if backend == "redis-multi":
        return _redis_handle(redis_server(), commit="multi")
    if backend == "lmdb":
        return _lmdb_handle(tmp_path)
    if backend == "sqlite":
        return _sqlite_handle(tmp_path)
    if backend == "postgres":
        if postgres_server is None:
            raise ValueError("the postgres test backend needs a postgres_server")
        return _postgres_handle(postgres_server())
    raise ValueError(f"unknown built-in test backend {backend!r}; known: {BUILTIN_BACKENDS}")


def url_handle(url: str) -> StoreHandle:
    """The store a user's URL names, opened with ``kelpie.open_storage(url)``.

    The URL is used as given: the suite isolates itself with unique actor
    ids, never with a prefix or by deleting anything. The one exception is a
    bare ``memory://``, which opens a new private store on every call: it is
    replaced by a unique ``memory://NAME`` so that reopening finds the data.
    """
    try:
        parsed = StorageURL.parse(url)
    except ValueError:
        parsed = None
    if parsed is not None and parsed.scheme == "memory" and not parsed.host and not parsed.path:
        handle = _memory_handle()
        handle.name = url_id(url)
        return handle
    return StoreHandle(url_id(url), lambda: open_storage(url))


def url_id(url: str) -> str:
    """A password-free name for ``url``, for test ids and messages."""
    try:
        return StorageURL.parse(url).render()
    except ValueError:
        return "<unparsable storage URL>"
