"""The backends ``kelpie bench`` measures when no ``--storage`` is given.

``memory://``, LMDB in a temporary directory (``sync`` on, its durable
default), SQLite in a file there (``sync=full``, its durable default) and,
if ``redis-server`` is on ``PATH``, Redis on a private server on a free
loopback port (no persistence: ``appendonly no``), measured twice:
``redis`` (the check-and-set script, ADR 0008) and ``redis-multi``
(``?commit=multi``: ``WATCH``/``MULTI``/``EXEC``, ADR 0011); and, if
PostgreSQL is installed (``initdb``) and asyncpg importable, ``postgres`` on a
private server on a free loopback port (``fsync`` on). Everything is removed
on exit.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from kelpie.bench.measure import Target
from kelpie.storage.url import StorageURL

__all__ = ["default_targets", "user_targets"]


@contextmanager
def default_targets(note: Callable[[str], None]) -> Iterator[list[Target]]:
    """memory, LMDB and SQLite in a temp dir and (when possible) a private Redis; cleaned up."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kelpie-bench-")))
        targets = [
            Target("memory", "memory://"),
            Target("lmdb", f"lmdb://{tmp}/lmdb"),
            Target("sqlite", f"sqlite://{tmp}/sqlite/kelpie.db"),
        ]
        if shutil.which("redis-server") is None:
            note("redis: skipped, redis-server is not on PATH")
        else:
            from kelpie.testing.redis_server import RedisServer

            server = RedisServer(tmp / "redis")
            try:
                server.start()
            except (OSError, RuntimeError) as exc:
                note(f"redis: skipped, redis-server did not start: {str(exc).splitlines()[0]}")
            else:
                stack.callback(server.stop)
                targets.append(Target("redis", server.url))
                targets.append(Target("redis-multi", server.url + "?commit=multi"))
        _add_postgres(stack, targets, note)
        yield targets


def _add_postgres(stack: ExitStack, targets: list[Target], note: Callable[[str], None]) -> None:
    from kelpie.testing.backends import missing_requirement

    reason = missing_requirement("postgres")
    if reason is not None:
        note(f"postgres: skipped, {reason}")
        return
    from kelpie.testing.postgres_server import PostgresServer

    server = PostgresServer()
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        server.close()
        note(f"postgres: skipped, the server did not start: {str(exc).splitlines()[0]}")
        return
    stack.callback(server.close)
    targets.append(Target("postgres", server.url(table="kelpie_bench", sslmode="disable")))


def user_targets(urls: list[str]) -> list[Target]:
    """One target per URL, labelled by scheme (``redis``, ``redis#2``, …)."""
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for url in urls:
        scheme = StorageURL.parse(url).scheme
        seen[scheme] = seen.get(scheme, 0) + 1
        label = scheme if seen[scheme] == 1 else f"{scheme}#{seen[scheme]}"
        targets.append(Target(label, url))
    return targets
