"""A loopback TCP proxy that cuts Redis connections at a chosen point of a commit.

``TcpProxy(target_port)`` listens on ``127.0.0.1`` and forwards every client
connection to ``127.0.0.1:target_port``. It parses RESP in both directions --
client commands (arrays of bulk strings) and server replies (nested RESP2) --
so it can tell which reply answers which command, and cut a connection at a
precise point of a commit. A commit is a ``MULTI … EXEC`` block (kelpie sends
the whole block in one write) or one ``EVALSHA``/``EVAL`` of kelpie's
check-and-set script (ADR 0008), which the proxy treats as a block of one:

``CutPoint.AFTER_WATCH``
    the replies to a transaction's first read -- a ``WATCH``, or the ``GET`` of
    the actor's version, and the read sent with it -- are forwarded, then the
    connection is cut. With ``WATCH`` the commit later finds its pinned
    connection dead; with the version check it reconnects and commits.
``CutPoint.BEFORE_MULTI``
    the commit (block) is held back and the connection cut: the server never
    sees any of it.
``CutPoint.INSIDE_BLOCK``
    part of the commit reaches the server (from just past ``MULTI``, or the
    first byte of a script call, up to a random byte short of its end), then
    the connection is cut: Redis discards the queued commands or the
    incomplete call.
``CutPoint.AFTER_EXEC``
    the whole commit reaches the server and runs; once the server's reply to
    ``EXEC`` (or to the script) arrived, the client connection is reset
    without it.

``arm(point)`` cuts the next matching block; ``random_cuts(...)`` cuts a
random fraction of blocks at random points. A block is held back (not
forwarded) until its ``EXEC`` arrived only while a cut is armed, so a client
that waits for ``MULTI``'s reply before sending more is only stalled then.
``ThreadedProxy`` runs a proxy on its own event loop in a daemon thread, for
code that runs its own loop (``run_seed``) or none. Test-harness code: loopback
only; it may use the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter, deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

__all__ = [
    "CutPoint",
    "ProxyStats",
    "TcpProxy",
    "ThreadedProxy",
    "command_end",
    "reply_end",
]

T = TypeVar("T")


class CutPoint(StrEnum):
    """Where in a commit's life the proxy cuts the connection."""

    AFTER_WATCH = "after_watch"
    BEFORE_MULTI = "before_multi"
    INSIDE_BLOCK = "inside_block"
    AFTER_EXEC = "after_exec"


# -- RESP framing -----------------------------------------------------------------


def _line_end(buf: bytes | bytearray, pos: int) -> int | None:
    end = buf.find(b"\r\n", pos)
    return None if end < 0 else end


def reply_end(buf: bytes | bytearray, pos: int = 0) -> int | None:
    """The offset just past the RESP2 value starting at ``pos``, or ``None`` if incomplete."""
    if pos >= len(buf):
        return None
    kind = buf[pos : pos + 1]
    line = _line_end(buf, pos)
    if line is None:
        return None
    if kind in (b"+", b"-", b":"):
        return line + 2
    count = int(buf[pos + 1 : line])
    if kind == b"$":
        if count < 0:
            return line + 2
        end = line + 2 + count + 2
        return end if len(buf) >= end else None
    if kind == b"*":
        cursor: int | None = line + 2
        for _ in range(max(count, 0)):
            assert cursor is not None
            cursor = reply_end(buf, cursor)
            if cursor is None:
                return None
        return cursor
    raise ValueError(f"not RESP2: {bytes(buf[pos : pos + 16])!r}")


def command_end(buf: bytes | bytearray, pos: int = 0) -> tuple[int, bytes] | None:
    """``(end, upper-cased command name)`` of the client command at ``pos``, or ``None``.

    Inline commands (a bare line) are accepted too, as ``redis-cli`` sends them.
    """
    if pos >= len(buf):
        return None
    if buf[pos : pos + 1] != b"*":
        line = _line_end(buf, pos)
        if line is None:
            return None
        words = bytes(buf[pos:line]).split()
        return line + 2, (words[0].upper() if words else b"")
    end = reply_end(buf, pos)
    if end is None:
        return None
    header = _line_end(buf, pos)
    assert header is not None
    name = b""
    if int(buf[pos + 1 : header]) > 0:
        size_line = _line_end(buf, header + 2)
        assert size_line is not None
        size = int(buf[header + 3 : size_line])
        name = bytes(buf[size_line + 2 : size_line + 2 + size]).upper()
    return end, name


# -- the proxy ------------------------------------------------------------------------

_SCRIPTS = (b"EVALSHA", b"EVAL")
_COMMITS = (b"MULTI", *_SCRIPTS)
_FIRST_READS = (b"WATCH", b"GET", b"MGET")  # MGET: an actor's version and delete counter


@dataclass
class ProxyStats:
    """What the proxy did: connections, commit blocks seen, cuts by point."""

    connections: int = 0
    blocks: int = 0
    cuts: Counter[str] | None = None

    def __post_init__(self) -> None:
        if self.cuts is None:
            self.cuts = Counter()


class _Link:
    """One proxied client connection and its server connection."""

    def __init__(
        self,
        proxy: TcpProxy,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        sreader: asyncio.StreamReader,
        swriter: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.creader, self.cwriter = creader, cwriter
        self.sreader, self.swriter = sreader, swriter
        self.pending: deque[bytes] = deque()  # names of commands awaiting a reply
        self.withhold_from: int | None = None  # reply number from which nothing is forwarded
        self.cut_after_reply: int | None = None  # cut once this many replies arrived
        self.replies = 0
        self.sent = 0
        self.closed = False

    def cut(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.cwriter.transport.abort()
        self.swriter.transport.abort()

    async def upstream(self) -> None:
        buf = bytearray()
        try:
            while not self.closed:
                data = await self.creader.read(65536)
                if not data:
                    break
                buf += data
                consumed = self._forward_commands(buf)
                del buf[:consumed]
                if not self.closed:
                    await self.swriter.drain()
        except (OSError, ValueError):
            pass
        finally:
            if not self.closed:
                self.swriter.close()

    def _forward_commands(self, buf: bytearray) -> int:
        """Forward every complete command (or block) in ``buf``; return bytes consumed."""
        pos = 0
        while not self.closed:
            parsed = command_end(buf, pos)
            if parsed is None:
                return pos
            end, name = parsed
            if name in _COMMITS and self.proxy.wants_cut(self):
                if name in _SCRIPTS:  # a block of one command
                    self._cut_block(buf, pos, pos + 1, [name], end)
                    return end
                block = self._whole_block(buf, pos)
                if block is None:
                    return pos  # hold the block back until its EXEC arrives
                names, exec_end = block
                self._cut_block(buf, pos, end, names, exec_end)
                return exec_end
            if name in _COMMITS:
                self.proxy.stats.blocks += 1
            self._forward(bytes(buf[pos:end]), [name])
            if name in _FIRST_READS and self.proxy.take_cut(CutPoint.AFTER_WATCH):
                # Cut after its reply and the reply to the read sent with it.
                self.cut_after_reply = self.sent + 1
            pos = end
        return pos

    def _whole_block(self, buf: bytearray, pos: int) -> tuple[list[bytes], int] | None:
        names: list[bytes] = []
        cursor = pos
        while True:
            parsed = command_end(buf, cursor)
            if parsed is None:
                return None
            cursor, name = parsed
            names.append(name)
            if name in (b"EXEC", b"DISCARD"):
                return names, cursor

    def _forward(self, data: bytes, names: Sequence[bytes]) -> None:
        self.pending.extend(names)
        self.sent += len(names)
        if data:
            self.swriter.write(data)

    def _cut_block(
        self, buf: bytearray, pos: int, multi_end: int, names: list[bytes], exec_end: int
    ) -> None:
        proxy = self.proxy
        proxy.stats.blocks += 1
        point = proxy.next_block_point()
        assert proxy.stats.cuts is not None
        proxy.stats.cuts[point] += 1
        if point == CutPoint.BEFORE_MULTI:
            self.cut()
        elif point == CutPoint.INSIDE_BLOCK:
            # Anything from just past MULTI up to one byte short of the end of EXEC.
            split = proxy.rng.randint(multi_end, exec_end - 1)
            self._forward(bytes(buf[pos:split]), [])
            task = asyncio.get_running_loop().create_task(self._cut_soon())
            proxy.track(task)
        else:  # AFTER_EXEC: let it run, withhold every reply of the block, then cut
            self.withhold_from = self.sent
            self._forward(bytes(buf[pos:exec_end]), names)
            self.cut_after_reply = self.sent

    async def _cut_soon(self) -> None:
        with contextlib.suppress(OSError):
            await self.swriter.drain()
        await asyncio.sleep(0.002)  # let the server read the partial block first
        self.cut()

    async def downstream(self) -> None:
        buf = bytearray()
        try:
            while not self.closed:
                data = await self.sreader.read(65536)
                if not data:
                    break
                buf += data
                pos = 0
                while not self.closed:
                    end = reply_end(buf, pos)
                    if end is None:
                        break
                    self.replies += 1
                    if self.pending:
                        self.pending.popleft()
                    if self.withhold_from is None or self.replies <= self.withhold_from:
                        self.cwriter.write(bytes(buf[pos:end]))
                    pos = end
                    if self.cut_after_reply is not None and self.replies >= self.cut_after_reply:
                        await self._drain_client()
                        self.cut()
                del buf[:pos]
                if not self.closed:
                    await self.cwriter.drain()
        except (OSError, ValueError):
            pass
        finally:
            if not self.closed:
                self.cwriter.close()
                self.swriter.close()
                self.closed = True

    async def _drain_client(self) -> None:
        with contextlib.suppress(OSError):
            await self.cwriter.drain()


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target_port``; cuts where told.

    ``stats.cuts`` counts the cuts made at each point, ``stats.blocks`` the
    ``MULTI`` blocks seen. ``seed`` drives the random choices (split offsets,
    ``random_cuts``).
    """

    def __init__(self, target_port: int, *, port: int = 0, seed: int = 0) -> None:
        self.target_port = target_port
        self.port = port
        self.rng = random.Random(seed)
        self.stats = ProxyStats()
        self._armed: deque[CutPoint] = deque()
        self._random: tuple[float, tuple[CutPoint, ...], int] | None = None
        self._next_random: CutPoint | None = None
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, db: int = 0, password: str | None = None) -> str:
        """The ``redis://`` URL of the proxy (with ``:password@`` when given)."""
        auth = f":{password}@" if password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    # -- choosing cuts -----------------------------------------------------------------

    def arm(self, point: CutPoint | str, times: int = 1) -> None:
        """Cut the next ``times`` commits (or WATCHes, for ``AFTER_WATCH``) at ``point``."""
        self._armed.extend([CutPoint(point)] * times)

    def random_cuts(
        self, probability: float, points: Sequence[CutPoint] = tuple(CutPoint), limit: int = -1
    ) -> None:
        """Cut each commit block (or WATCH) with ``probability`` at a random point.

        ``limit`` caps the number of cuts (negative: no cap); ``probability`` 0 stops.
        """
        self._random = (probability, tuple(points), limit) if probability > 0 else None

    def disarm(self) -> None:
        """Cut nothing more (connections already cut stay cut)."""
        self._armed.clear()
        self._random = None
        self._next_random = None

    @property
    def armed(self) -> int:
        """How many armed cuts have not fired yet."""
        return len(self._armed)

    @property
    def total_cuts(self) -> int:
        assert self.stats.cuts is not None
        return sum(self.stats.cuts.values())

    def _draw(self) -> CutPoint | None:
        if self._random is None:
            return None
        probability, points, limit = self._random
        if limit >= 0 and self.total_cuts >= limit:
            self._random = None
            return None
        if self.rng.random() >= probability:
            return None
        return self.rng.choice(points)

    def take_cut(self, point: CutPoint) -> bool:
        """Consume an armed (or earlier drawn) cut at ``point``, for WATCH-time cuts."""
        assert self.stats.cuts is not None
        if self._armed and self._armed[0] == point:
            self._armed.popleft()
            self.stats.cuts[point] += 1
            return True
        if self._next_random == point:
            self._next_random = None
            self.stats.cuts[point] += 1
            return True
        return False

    def wants_cut(self, link: _Link) -> bool:
        """Whether the ``MULTI`` block starting now is to be cut (then it is held back).

        Random cuts are drawn here, once per block; a drawn ``AFTER_WATCH``
        waits for the next ``WATCH`` and lets this block through.
        """
        if self._armed:
            return self._armed[0] != CutPoint.AFTER_WATCH
        if self._next_random is None:
            self._next_random = self._draw()
        return self._next_random not in (None, CutPoint.AFTER_WATCH)

    def next_block_point(self) -> CutPoint:
        if self._armed:
            return self._armed.popleft()
        point, self._next_random = self._next_random, None
        assert point is not None
        return point

    # -- lifecycle ---------------------------------------------------------------------

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cwriter.transport.abort()  # the server is down: the client sees a reset
            return
        self.stats.connections += 1
        link = _Link(self, creader, cwriter, sreader, swriter)
        self._links = [known for known in self._links if not known.closed]
        self._links.append(link)
        for coro in (link.upstream(), link.downstream()):
            self.track(asyncio.get_running_loop().create_task(coro))

    async def cut_all(self) -> None:
        """Reset every open connection (the server sees them close too)."""
        for link in self._links:
            link.cut()
        self._links.clear()
        await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.cut_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ThreadedProxy:
    """A ``TcpProxy`` on its own event loop in a daemon thread.

    Its methods may be called from any thread (they hop onto the proxy's loop),
    so a proxy can serve a client that runs its own loop, e.g. ``run_seed``.
    """

    def __init__(self, target_port: int, *, seed: int = 0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = TcpProxy(target_port, seed=seed)
        self._call(self.proxy.start())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def _do(self, fn: Any, *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return self._call(run())

    @property
    def port(self) -> int:
        return self.proxy.port

    def url(self, db: int = 0, password: str | None = None) -> str:
        return self.proxy.url(db, password)

    def arm(self, point: CutPoint | str, times: int = 1) -> None:
        self._do(self.proxy.arm, point, times)

    def random_cuts(
        self, probability: float, points: Sequence[CutPoint] = tuple(CutPoint), limit: int = -1
    ) -> None:
        self._do(self.proxy.random_cuts, probability, points, limit)

    def disarm(self) -> None:
        self._do(self.proxy.disarm)

    def cuts(self) -> Counter[str]:
        result: Counter[str] = self._do(lambda: Counter(self.proxy.stats.cuts))
        return result

    def blocks(self) -> int:
        result: int = self._do(lambda: self.proxy.stats.blocks)
        return result

    def cut_all(self) -> None:
        self._call(self.proxy.cut_all())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._call(self.proxy.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> ThreadedProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
