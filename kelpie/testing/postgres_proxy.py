"""A loopback TCP proxy that cuts PostgreSQL connections just before or just after a commit.

``PgProxy(target_port)`` listens on ``127.0.0.1`` and forwards each client
connection to ``127.0.0.1:target_port``, parsing the frontend/backend protocol
in both directions (after the untyped startup packets). A *commit* is what
ends a transaction at the server: kelpie's batch statement (sent as
Parse/Bind/Execute/Sync and run in autocommit, recognised by its text at
Parse and by its prepared-statement name at later Binds) or a ``COMMIT``
(simple query, as ``delete_actor``'s explicit transaction sends it).

``PgCut.BEFORE_COMMIT``
    the commit's messages are held back and the connection cut: the server
    never sees it; nothing may land.
``PgCut.AFTER_COMMIT``
    the commit reaches the server and runs; once its ``ReadyForQuery`` arrives
    (the transaction is over: committed), the client connection is cut without
    any of the reply.

``arm(point)`` cuts the next commit; ``random_cuts(p)`` cuts each commit with
probability ``p`` at a random point. ``ThreadedPgProxy`` runs one on its own
loop in a daemon thread (for ``run_seed``). Test-harness code: loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Coroutine
from enum import StrEnum
from typing import Any, TypeVar

__all__ = ["COMMIT_MARKER", "PgCut", "PgProxy", "ThreadedPgProxy"]

T = TypeVar("T")

COMMIT_MARKER = b"WITH meta AS ("
"""How kelpie's batch statement starts (``kelpie.storage.postgres.sql``)."""
_SSL_REQUEST = 80877103


class PgCut(StrEnum):
    BEFORE_COMMIT = "before_commit"
    AFTER_COMMIT = "after_commit"


def _cstring(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.index(b"\x00", pos)
    return data[pos:end], end + 1


class _Link:
    """One client connection and its server connection."""

    def __init__(
        self,
        proxy: PgProxy,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        sreader: asyncio.StreamReader,
        swriter: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.creader, self.cwriter = creader, cwriter
        self.sreader, self.swriter = sreader, swriter
        self.statements: dict[bytes, bool] = {}  # prepared statement name -> is the commit
        self.ssl_bytes = 0  # raw one-byte answers owed to SSLRequests
        self.pending: PgCut | None = None  # an AFTER cut waiting for ReadyForQuery
        self.commits_in_flight = 0
        self.closed = False

    def cut(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.cwriter, self.swriter):
            with contextlib.suppress(Exception):
                sock = writer.get_extra_info("socket")
                if sock is not None:  # RST, not FIN: the client sees a reset connection
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()

    def _is_commit(self, kind: bytes, body: bytes) -> bool:
        if kind == b"Q":
            return body.rstrip(b"\x00").strip().rstrip(b";").strip().upper() == b"COMMIT"
        if kind == b"P":
            name, pos = _cstring(body, 0)
            query, _ = _cstring(body, pos)
            self.statements[name] = COMMIT_MARKER in query
            return False  # the commit runs at its Bind/Execute
        if kind == b"B":
            _, pos = _cstring(body, 0)
            statement, _ = _cstring(body, pos)
            return self.statements.get(statement, False)
        return False

    async def upstream(self) -> None:
        """Client -> server."""
        reader = self.creader
        try:
            while True:  # untyped startup packets first
                head = await reader.readexactly(8)
                length, code = struct.unpack("!ii", head)
                rest = await reader.readexactly(length - 8)
                if code == _SSL_REQUEST:
                    self.ssl_bytes += 1
                    self.swriter.write(head + rest)
                    continue
                self.swriter.write(head + rest)
                break
            while not self.closed:
                head = await reader.readexactly(5)
                kind = head[:1]
                (length,) = struct.unpack("!i", head[1:])
                body = await reader.readexactly(length - 4)
                if self._is_commit(kind, body):
                    point = self.proxy.take_cut()
                    if point == PgCut.BEFORE_COMMIT:
                        self.proxy.cuts[point.value] += 1
                        self.cut()
                        return
                    if point == PgCut.AFTER_COMMIT:
                        self.pending = point
                    self.proxy.commits += 1
                self.swriter.write(head + body)
                await self.swriter.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.cut()

    async def downstream(self) -> None:
        """Server -> client; an AFTER cut drops the reply from the commit on."""
        reader = self.sreader
        held = False
        try:
            while not self.closed:
                if self.ssl_bytes:
                    byte = await reader.readexactly(1)
                    self.ssl_bytes -= 1
                    self.cwriter.write(byte)
                    continue
                head = await reader.readexactly(5)
                (length,) = struct.unpack("!i", head[1:])
                body = await reader.readexactly(length - 4)
                if self.pending is not None:
                    held = True  # everything from here on is the commit's reply
                if held and head[:1] == b"Z":
                    assert self.pending is not None
                    self.proxy.cuts[self.pending.value] += 1
                    self.cut()
                    return
                if not held:
                    self.cwriter.write(head + body)
                    await self.cwriter.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.cut()


class PgProxy:
    """The proxy: ``url(...)`` for clients, ``arm``/``random_cuts`` to cut commits."""

    def __init__(self, target_port: int, *, seed: int = 0) -> None:
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.cuts: Counter[str] = Counter()
        self.commits = 0
        self._armed: list[PgCut] = []
        self._probability = 0.0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._links: set[_Link] = set()
        self.port = 0

    def arm(self, point: PgCut | str) -> None:
        self._armed.append(PgCut(point))

    @property
    def armed(self) -> int:
        return len(self._armed)

    def random_cuts(self, probability: float) -> None:
        self._probability = probability

    def disarm(self) -> None:
        self._armed.clear()
        self._probability = 0.0

    def take_cut(self) -> PgCut | None:
        if self._armed:
            return self._armed.pop(0)
        if self._probability and self.rng.random() < self._probability:
            return self.rng.choice(list(PgCut))
        return None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cwriter.close()
            return
        link = _Link(self, creader, cwriter, sreader, swriter)
        self._links.add(link)
        try:
            await asyncio.gather(link.upstream(), link.downstream())
        finally:
            self._links.discard(link)

    def cut_all(self) -> None:
        for link in list(self._links):
            link.cut()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.cut_all()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None

    async def __aenter__(self) -> PgProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ThreadedPgProxy:
    """A ``PgProxy`` on its own event loop in a daemon thread."""

    def __init__(self, target_port: int, *, seed: int = 0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = PgProxy(target_port, seed=seed)
        self._call(self.proxy.start())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def _do(self, fn: Any, *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return self._call(run())

    @property
    def port(self) -> int:
        return self.proxy.port

    def random_cuts(self, probability: float) -> None:
        self._do(self.proxy.random_cuts, probability)

    def disarm(self) -> None:
        self._do(self.proxy.disarm)

    def cuts(self) -> Counter[str]:
        result: Counter[str] = self._do(lambda: Counter(self.proxy.cuts))
        return result

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self.proxy.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> ThreadedPgProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
