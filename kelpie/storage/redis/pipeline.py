"""One multiplexed connection per Redis server: concurrent requests share round trips.

Every request kelpie sends to Redis is a few commands packed once, with a
known number of replies, and is either a *read* (writes nothing) or a
*commit* (one check-and-set script, ADR 0008). A ``Multiplexer`` owns one
connection to one server and drives it with ``kelpie.storage.group_commit.Batcher``:
a request that finds the connection idle goes out at once, alone; requests
that arrive while a batch is on the wire queue up and go together in the
next batch — all of them in ONE send, their replies read back in order.
WATCH is never used (its state is per connection, and EXEC would clear every
actor's WATCH at once), so different actors' commits can share a connection.

Honest outcomes, per request of a batch:

- connecting failed before anything was sent: ``StorageUnavailableError``;
- the connection broke (or timed out) after the batch was sent: requests
  whose replies were fully read keep their real outcomes; an unread read is
  ``StorageUnavailableError``, an unread commit ``CommitOutcomeUnknownError``
  (its bytes may have landed). The connection is dropped; the next batch
  reconnects (after the stale-socket check of ``checkout``).
- the task writing the batch was cancelled mid round trip: the connection is
  dropped (its replies would desynchronise); the Batcher reports the batch's
  commits as outcome unknown, its reads as unavailable.

``commit_suffix``: commands appended once after any batch that holds a
commit (Redis Cluster's ``WAIT``); each commit of the batch gets their
replies after its own.

The drain task that writes queued batches serves every caller, so the
Batcher is ``shared``: the drain starts in a fresh ``contextvars.Context``,
never as a task of whichever caller led last.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions as rex
from redis.asyncio.connection import AbstractConnection, ConnectionPool

from kelpie.errors import CommitOutcomeUnknownError, StorageUnavailableError
from kelpie.storage.group_commit import DEFAULT_MAX_BATCH, Batcher

__all__ = [
    "BULK_HEADERS",
    "BULK_HEADER_LIMIT",
    "CRLF",
    "Command",
    "Multiplexer",
    "Request",
    "checkout",
    "pack",
    "pack_args",
    "roundtrip",
    "socket_looks_stale",
]

Command = Sequence[bytes]
Translate = Callable[[BaseException, str, bool], Exception]
"""``translate(exc, action, sent)``: the kelpie error for a raw failure."""

_HAS_POLL = hasattr(select, "poll")
_POLL_STALE = select.POLLIN | select.POLLPRI | getattr(select, "POLLRDHUP", 0) if _HAS_POLL else 0


# -- RESP encoding ------------------------------------------------------------
#
# Commands are packed by hand, once per request: the argument set is tiny
# (bytes only), and skipping redis-py's per-argument encoder keeps a commit's
# client-side cost low. A bulk string is three pieces joined once at the end:
# its length header (looked up, not formatted, for the usual small sizes), the
# argument itself (never copied on its own) and CRLF.

CRLF = b"\r\n"
BULK_HEADER_LIMIT = 1024
BULK_HEADERS = tuple(b"$%d\r\n" % size for size in range(BULK_HEADER_LIMIT))
"""``BULK_HEADERS[n]``: the RESP header of an ``n``-byte bulk string (``n < BULK_HEADER_LIMIT``)."""


def pack_args(args: Sequence[bytes], out: list[bytes]) -> None:
    """Append the RESP bulk strings of ``args`` to ``out`` (as pieces for one ``join``)."""
    extend = out.extend
    for arg in args:
        size = len(arg)
        extend((BULK_HEADERS[size] if size < BULK_HEADER_LIMIT else b"$%d\r\n" % size, arg, CRLF))


def pack(commands: Sequence[Command]) -> bytes:
    """The RESP encoding of ``commands``, ready for one send."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        pack_args(command, out)
    return b"".join(out)


@dataclass(slots=True)
class Request:
    """Packed commands, how many replies they produce, and whether they may write."""

    packed: bytes
    replies: int
    commit: bool
    action: str
    """What the caller is doing, for error messages ("reading a key", "committing")."""


# -- connection handling ------------------------------------------------------


def socket_looks_stale(conn: AbstractConnection) -> bool:
    """True if an idle connection's socket has anything pending (EOF, RST, stray bytes).

    redis-py only notices a peer that went away once the event loop has run its
    read callback; a zero-timeout ``poll`` asks the kernel directly, so a
    commit is never sent down a socket the server already closed.
    """
    reader = getattr(conn, "_reader", None)
    if reader is not None and reader.at_eof():
        return True
    writer = getattr(conn, "_writer", None)
    transport = getattr(writer, "transport", None)
    if transport is None:  # not connected, or a fake connection (fakeredis)
        return writer is None
    if transport.is_closing():
        return True
    if transport.get_extra_info("sslcontext") is not None:
        return False  # TLS may have protocol records pending; redis-py's own check covers it
    sock = transport.get_extra_info("socket")
    if sock is None or not _HAS_POLL:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), _POLL_STALE)
    return bool(poller.poll(0))


async def refresh(conn: AbstractConnection) -> None:
    """Reconnect ``conn`` if the server closed it; nothing was sent on it, so this is safe."""
    if socket_looks_stale(conn):
        await conn.disconnect(nowait=True)
        await conn.connect()  # type: ignore[no-untyped-call]


async def checkout(pool: ConnectionPool) -> AbstractConnection:
    """A connected, clean connection from ``pool``; raw redis errors propagate."""
    conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await refresh(conn)  # closed by the server (restart, idle timeout) while pooled
    except BaseException:
        await pool.release(conn)
        raise
    return conn


async def read_replies(
    conn: AbstractConnection, count: int, results: list[Any] | None = None
) -> list[Any]:
    """Read ``count`` replies into ``results``; error replies are values, transport errors raise.

    Replies read before a failure stay in ``results``.

    On redis-py's own connections the parser is driven directly under ONE
    ``socket_timeout`` for all ``count`` replies (they were sent together):
    ``read_response`` would start a timeout per reply, the biggest client-side
    cost of a large batch. Other connections (fakeredis) go through it.
    """
    if results is None:
        results = []
    if type(conn).read_response is not AbstractConnection.read_response:
        for _ in range(count):
            try:
                results.append(await conn.read_response(disable_decoding=True))
            except rex.ResponseError as exc:
                results.append(exc)
        return results
    parser: Any = conn._parser  # redis-py's RESP2 or hiredis parser: error replies are values
    async with _transport_errors(conn, "reading from"):
        async with asyncio.timeout(conn.socket_timeout):
            for _ in range(count):
                results.append(await parser.read_response(disable_decoding=True))
    return results


@contextlib.asynccontextmanager
async def _transport_errors(conn: AbstractConnection, doing: str) -> AsyncIterator[None]:
    """On any failure disconnect ``conn``; a timeout or OS error becomes redis-py's own."""
    try:
        yield
    except TimeoutError as exc:
        await conn.disconnect(nowait=True)
        raise rex.TimeoutError(f"Timeout {doing} {conn._host_error()}") from exc
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise rex.ConnectionError(f"Error while {doing} {conn._host_error()}: {exc}") from exc
    except BaseException:
        await conn.disconnect(nowait=True)
        raise


async def send_packed(conn: AbstractConnection, packed: bytes) -> None:
    """Hand ``packed`` to the socket; transport errors raise (``conn`` is then disconnected).

    On redis-py's own connected connections this writes to the stream directly
    and waits (under ``socket_timeout``) only if the kernel did not take every
    byte at once: ``send_packed_command`` runs each send under
    ``asyncio.wait_for``, a task per call, the largest client-side cost of a
    small request. Other connections (fakeredis) go through it.
    """
    writer: Any = getattr(conn, "_writer", None)
    if (
        type(conn).send_packed_command is not AbstractConnection.send_packed_command
        or not isinstance(writer, asyncio.StreamWriter)
        or not conn.is_connected
    ):
        await conn.send_packed_command(packed, check_health=False)
        return
    async with _transport_errors(conn, "writing to"):
        writer.write(packed)
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(conn.socket_timeout):
                await writer.drain()


async def roundtrip(conn: AbstractConnection, packed: bytes, replies: int) -> list[Any]:
    """Send ``packed`` and read ``replies`` replies (see ``read_replies``).

    Any other failure, cancellation included, disconnects ``conn``: its
    replies would no longer match its requests.
    """
    try:
        await send_packed(conn, packed)
        return await read_replies(conn, replies)
    except BaseException:
        await conn.disconnect(nowait=True)
        raise


# -- the multiplexer ------------------------------------------------------------


def _in_flight_error() -> BaseException:
    return CommitOutcomeUnknownError(
        "the storage stopped while this request was on the wire; a commit may or may "
        "not have landed: reload before deciding"
    )


class Multiplexer:
    """One lazily connected connection to one server, shared through group commit.

    ``submit(request)`` returns the request's replies (error replies as
    ``redis.exceptions.ResponseError`` values) or raises a kelpie error made
    by ``translate``.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        translate: Translate,
        max_batch: int = DEFAULT_MAX_BATCH,
        commit_suffix: Sequence[Command] = (),
    ) -> None:
        self._pool = pool
        self._translate = translate
        self._conn: AbstractConnection | None = None
        self._suffix = pack(commit_suffix) if commit_suffix else b""
        self._suffix_replies = len(commit_suffix)
        self.batcher: Batcher[Request, list[Any]] = Batcher(
            self._write, max_batch=max_batch, in_flight_error=_in_flight_error, shared=True
        )

    async def submit(self, request: Request) -> list[Any]:
        """Send ``request`` in the next batch; its replies, or a kelpie error."""
        try:
            return await self.batcher.submit(request)
        except CommitOutcomeUnknownError as exc:
            if request.commit:
                raise
            # A read writes nothing: "outcome unknown" would be a false alarm.
            raise StorageUnavailableError(
                f"the connection was lost while {request.action}; nothing was written"
            ) from exc

    async def _connection(self) -> AbstractConnection:
        conn = self._conn
        if conn is None:
            conn = self._conn = await checkout(self._pool)
        elif not conn.is_connected:
            await conn.connect()  # type: ignore[no-untyped-call]
        else:
            await refresh(conn)
        return conn

    async def _write(self, batch: Sequence[Request]) -> list[list[Any] | BaseException]:
        try:
            conn = await self._connection()
        except Exception as exc:  # nothing was sent
            return [self._translate(exc, request.action, False) for request in batch]
        with_suffix = bool(self._suffix) and any(request.commit for request in batch)
        packed = b"".join(request.packed for request in batch)
        if with_suffix:
            packed += self._suffix
        counts = [request.replies for request in batch]
        if with_suffix:
            counts.append(self._suffix_replies)
        replies: list[Any] = []
        try:
            await send_packed(conn, packed)
            await read_replies(conn, sum(counts), replies)  # one timeout for the batch
        except Exception as exc:
            await conn.disconnect(nowait=True)
            failure: Exception | None = exc
        except BaseException:
            await conn.disconnect(nowait=True)  # cancelled mid round trip
            raise
        else:
            failure = None
        split: list[list[Any]] = []
        start = 0
        for count in counts:
            split.append(replies[start : start + count])
            start += count
        suffix = split.pop() if with_suffix else []
        outcomes: list[list[Any] | BaseException] = list(split)
        for index, request in enumerate(batch):
            outcome = split[index]
            if failure is None:
                if request.commit:
                    outcome += suffix
            elif len(outcome) < request.replies or (request.commit and with_suffix):
                # Unread: a read wrote nothing; a commit may have landed. A commit
                # whose own reply was read but not the suffix's (WAIT) is on the
                # server, unconfirmed: outcome unknown too.
                outcomes[index] = self._translate(failure, request.action, request.commit)
        return outcomes

    async def close(self) -> None:
        """Wait for queued requests, then give the connection back to its pool, closed."""
        await self.batcher.wait_idle()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.disconnect(nowait=True)
            finally:
                await self._pool.release(conn)
