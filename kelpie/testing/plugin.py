"""pytest plugin: the fixtures the conformance suite (and kelpie's own tests) run on.

Load it with ``-p kelpie.testing.plugin`` or ``pytest_plugins = ["kelpie.testing.plugin"]``.

``--storage-url=URL`` (repeatable) runs every storage test against only those
URLs, opened with ``kelpie.open_storage(url)`` — any scheme, including a
third party's. Without it, tests run against every built-in backend:
``memory``, ``fakeredis``, ``redis`` (one redis-server per session on a free
loopback port, a unique key prefix per test), ``lmdb`` (a temporary
directory per test), ``sqlite`` (a file in a temporary directory per
test) and ``postgres`` (one PostgreSQL server per session on a free loopback
port, a table per test); a backend whose packages are missing is skipped
with the reason.

Fixtures:

- ``storage_backend``: the backend's name (or the password-free URL).
- ``storage``: an open ``Storage``, closed after the test.
- ``open_storage_again``: ``await open_storage_again()`` returns a *new*
  ``Storage`` on the same data (reopen after close; two at once act like two
  processes). Everything it opened is closed after the test.
- ``store_handle``: the ``StoreHandle`` behind both, for code that runs its
  own event loop (the Hypothesis state machine).
- ``new_actor``: ``new_actor("label")`` returns a unique ``ActorId``, so tests
  never touch anything on a shared deployment but their own records. Every id
  it makes (and every id built by hand from ``new_actor.suffix()``) carries the
  factory's run token; with ``--storage-url``, the session ends by deleting
  every actor of those URLs whose namespace or id holds a token of this
  session (``delete_actor``), so a run -- even one whose tests crashed
  midway -- leaves nothing behind.
- ``redis_server``: the session's ``RedisServer``.
- ``postgres_server``: the session's ``PostgresServer``.
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from kelpie.identity import ActorId
from kelpie.storage import lifecycle
from kelpie.storage.protocol import Storage
from kelpie.testing.backends import (
    BUILTIN_BACKENDS,
    StoreHandle,
    builtin_handle,
    missing_requirement,
    url_handle,
    url_id,
)

if TYPE_CHECKING:
    from kelpie.testing.postgres_server import PostgresServer
    from kelpie.testing.redis_server import RedisServer

__all__ = ["ActorFactory", "Reopen"]

Reopen = Callable[[], Awaitable[Storage]]
"""The type of the ``open_storage_again`` fixture."""

_URL_OPTION = "kelpie_storage_urls"
_URL_PREFIX = "url:"
_LOOP_SCOPE = "asyncio_default_fixture_loop_scope"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kelpie", "kelpie storage conformance")
    group.addoption(
        "--storage-url",
        action="append",
        dest=_URL_OPTION,
        default=[],
        metavar="URL",
        help="run storage tests only against this storage URL (repeatable); "
        "default: every built-in backend",
    )
    group.addoption(
        "--no-reopen",
        action="store_true",
        dest="kelpie_no_reopen",
        default=False,
        help="the storage URL opens a new, empty store each time (not durable, not "
        "shareable): skip the tests that reopen it or open it twice",
    )
    group.addoption(
        "--conformance-examples",
        action="store",
        type=int,
        default=100,
        metavar="N",
        help="Hypothesis examples for the model-based storage test (default 100)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Run from a user's project (``pytest --pyargs kelpie.testing.conformance``),
    # no configuration file sets pytest-asyncio's fixture loop scope, and
    # pytest-asyncio's own pytest_configure (which runs after this one) warns
    # with a PytestDeprecationWarning. Every fixture here is function-scoped:
    # choose "function" unless the user's configuration chose a scope.
    try:
        chosen = config.getini(_LOOP_SCOPE)
    except ValueError:  # pytest-asyncio is not loaded (-p no:asyncio)
        return
    if not chosen:
        # pytest has no public setter for an ini value; its ini cache is what
        # getini() answers from for the rest of the session.
        config._inicache[_LOOP_SCOPE] = "function"


def storage_urls(config: pytest.Config) -> list[str]:
    """The ``--storage-url`` values given on the command line."""
    urls: list[str] = config.getoption(_URL_OPTION) or []
    return urls


def reopen_disabled(config: pytest.Config) -> bool:
    """True if ``--no-reopen`` says the store cannot be reopened on the same data."""
    return bool(config.getoption("kelpie_no_reopen", default=False))


def _pinned(metafunc: pytest.Metafunc) -> bool:
    """True if the test parametrises ``storage_backend`` itself, e.g.
    ``@pytest.mark.parametrize("storage_backend", ["memory"], indirect=True)``."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "storage_backend" in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "storage_backend" not in metafunc.fixturenames or _pinned(metafunc):
        return
    urls = storage_urls(metafunc.config)
    params: list[object]
    if urls:
        params = [pytest.param(_URL_PREFIX + url, id=url_id(url)) for url in urls]
    else:
        params = []
        for name in BUILTIN_BACKENDS:
            reason = missing_requirement(name)
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            params.append(pytest.param(name, id=name, marks=marks))
    metafunc.parametrize("storage_backend", params, indirect=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session, on a free loopback port."""
    reason = missing_requirement("redis")
    if reason is not None:
        pytest.skip(reason)
    from kelpie.testing.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, on a free loopback port (a table per test)."""
    reason = missing_requirement("postgres")
    if reason is not None:
        pytest.skip(reason)
    from kelpie.testing.postgres_server import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture
def storage_backend(request: pytest.FixtureRequest) -> str:
    """The backend under test: a built-in name, or the password-free URL."""
    param = getattr(request, "param", None)
    if param is None:
        # Requested without parametrisation (e.g. from a plain test): memory.
        return "memory"
    value = str(param)
    return url_id(value.removeprefix(_URL_PREFIX)) if value.startswith(_URL_PREFIX) else value


@pytest.fixture
def store_handle(
    storage_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[StoreHandle]:
    """A fresh store (or the user's URL) that the storage fixtures open."""
    callspec = getattr(request.node, "callspec", None)
    raw = callspec.params.get("storage_backend") if callspec is not None else None
    param = storage_backend if raw is None else str(raw)
    if param.startswith(_URL_PREFIX):
        handle = url_handle(param.removeprefix(_URL_PREFIX))
    else:

        def server() -> RedisServer:
            started: RedisServer = request.getfixturevalue("redis_server")
            return started

        def pg_server() -> PostgresServer:
            started: PostgresServer = request.getfixturevalue("postgres_server")
            return started

        handle = builtin_handle(
            param, tmp_path=tmp_path, redis_server=server, postgres_server=pg_server
        )
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest_asyncio.fixture
async def open_storage_again(
    store_handle: StoreHandle, request: pytest.FixtureRequest
) -> AsyncIterator[Reopen]:
    """``await open_storage_again()``: a new ``Storage`` on the same data."""
    opened: list[Storage] = []

    async def reopen() -> Storage:
        if opened and reopen_disabled(request.config):
            pytest.skip("--no-reopen: this storage cannot be reopened on the same data")
        storage = store_handle.open()
        opened.append(storage)
        return storage

    try:
        yield reopen
    finally:
        errors: list[BaseException] = []
        for storage in reversed(opened):
            try:
                await storage.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest_asyncio.fixture
async def storage(open_storage_again: Reopen) -> AsyncIterator[Storage]:
    """An open ``Storage`` on a fresh store; closed after the test."""
    opened = await open_storage_again()
    try:
        yield opened
    finally:
        await opened.close()


class ActorFactory:
    """Makes ``ActorId``s no other test run shares: ``new_actor("label")``."""

    def __init__(self, issued: set[ActorId] | None = None) -> None:
        self.run = uuid.uuid4().hex[:16]
        self._count = 0
        self._issued = issued
        """Where the ids this factory made are recorded (swept at the session's end)."""

    def suffix(self) -> str:
        """A fresh unique string, for building ids by hand."""
        self._count += 1
        return f"{self.run}-{self._count}"

    def track(self, *actors: ActorId) -> None:
        """Have the session delete ``actors`` too (ids built by hand, e.g. from ``suffix()``).

        Listed actors holding a run token are found anyway; this reaches those a
        test emptied (not listed, but a backend may still keep their version).
        """
        if self._issued is not None:
            self._issued.update(actors)

    def __call__(self, label: str = "actor", *, namespace: str = "conformance") -> ActorId:
        actor = ActorId(namespace, f"{label}-{self.suffix()}")
        if self._issued is not None:
            self._issued.add(actor)
        return actor


@dataclass
class _Runs:
    """What the session's ``new_actor`` factories handed out."""

    tokens: set[str] = field(default_factory=set)
    issued: set[ActorId] = field(default_factory=set)


async def _sweep(url: str, runs: _Runs) -> int:
    """Delete every actor of ``url`` that this session made; how many.

    That is every listed actor whose namespace or id holds a run token (ids
    built by hand from ``suffix()`` included), and every id a factory issued
    -- listed or not: an actor whose keys a test deleted is not listed, but a
    backend may still keep its version record, which ``delete_actor`` removes.
    """
    from kelpie.storage.registry import open_storage

    pattern = re.compile("|".join(sorted(runs.tokens)))
    storage = open_storage(url)
    try:
        doomed = set(runs.issued)
        doomed.update(
            [
                actor
                async for actor in lifecycle.iter_actors(storage)
                if pattern.search(actor.namespace) or pattern.search(actor.id)
            ]
        )
        for actor in sorted(doomed):
            await lifecycle.delete_actor(storage, actor)
        return len(doomed)
    finally:
        await storage.close()


@pytest.fixture(scope="session")
def _actor_runs(request: pytest.FixtureRequest) -> Iterator[_Runs]:
    """The run tokens and ids of every ``new_actor`` factory of the session; swept at its end."""
    runs = _Runs()
    yield runs
    if not runs.tokens or reopen_disabled(request.config):
        return
    for url in storage_urls(request.config):
        try:
            asyncio.run(_sweep(url, runs))
        except Exception as exc:
            sys.stderr.write(
                f"\nkelpie: could not delete the actors this run wrote to {url_id(url)}: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())}\n"
            )


@pytest.fixture
def new_actor(_actor_runs: _Runs) -> ActorFactory:
    """``new_actor("label")``: a unique ``ActorId`` for this test."""
    factory = ActorFactory(_actor_runs.issued)
    _actor_runs.tokens.add(factory.run)
    return factory
