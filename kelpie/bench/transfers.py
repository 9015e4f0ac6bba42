"""``kelpie bench --workload transfers``: transfers/s against plain invocations/s (issue 16).

A *transfer* is a ``debit`` invocation of one account whose commit carries a
``ctx.send`` of ``credit`` to another account, counted once that credit has
been applied at the target: two commits (sender, target) plus the delivery.
The baseline is plain ``deposit`` invocations (one commit each) by the same N
concurrent clients on the same N accounts, through the same ``Runtime`` on the
same storage, in alternating slices. A transfer slice runs its debits for its
share of the time and then waits until every credit it sent was applied; its
time includes that wait. Issue 16's target: transfers/s >= 0.4 x inv/s.

At the end the runtime is closed, the credits are checked against the debits
(every one applied exactly once), every account is deleted with
``delete_actor`` and the messaging index entries that name them are removed
from ``kelpie.index/00``..``15`` (shards left empty are deleted on a store the
bench made itself; on a user's store another runtime may be writing to them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from kelpie.actor import Actor, ActorContext, ActorId
from kelpie.bench.measure import BenchOptions, Target, new_namespace
from kelpie.bench.report import NA
from kelpie.bench.timing import Call, Sample, alternate, run_slice, warm_up
from kelpie.bench.workload import delete_actor_keys, read_batch_stats
from kelpie.errors import UnsupportedOperationError
from kelpie.messaging import records
from kelpie.runtime import Runtime
from kelpie.storage import Storage, lifecycle, open_storage

__all__ = [
    "TARGET",
    "TransferRow",
    "TransferSides",
    "bench_transfers",
    "format_transfer_header",
    "format_transfer_row",
    "transfer_summary_lines",
]

TARGET = 0.4
"""Issue 16: transfers/s at least this times plain invocations/s on the same backend."""


@dataclass
class Balance:
    balance: int = 0
    received: int = 0
    """Credits applied by messages (plain deposits not counted)."""
    sent: int = 0
    """Debits committed (each sent one credit)."""


class Applied:
    """Credits whose handler ran, and a wait for a given number of them."""

    def __init__(self) -> None:
        self.count = 0
        self._waiter: tuple[int, asyncio.Future[None]] | None = None

    def add(self) -> None:
        self.count += 1
        waiter = self._waiter
        if waiter is not None and self.count >= waiter[0] and not waiter[1].done():
            waiter[1].set_result(None)

    async def reach(self, total: int, limit: float) -> None:
        """Return once ``total`` credits ran; ``TimeoutError`` after ``limit`` seconds."""
        if self.count >= total:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = (total, future)
        try:
            async with asyncio.timeout(limit):
                await future
        except TimeoutError:
            raise TimeoutError(
                f"only {self.count:,} of {total:,} credits were applied within {limit:g} s"
            ) from None
        finally:
            self._waiter = None


def account_class(applied: Applied) -> type[Actor[Balance]]:
    """The bench's account actor, counting the credits it applies into ``applied``."""

    class Account(Actor[Balance]):
        state_type = Balance

        async def deposit(self, ctx: ActorContext[Balance], payload: int) -> None:
            ctx.state.balance += payload

        async def debit(self, ctx: ActorContext[Balance], payload: str) -> None:
            """Move 1 to account ``payload`` (an id in this namespace)."""
            ctx.state.balance -= 1
            ctx.state.sent += 1
            ctx.send(ActorId(ctx.actor_id.namespace, payload), "credit", 1)

        async def credit(self, ctx: ActorContext[Balance], payload: int) -> None:
            ctx.state.balance += payload
            ctx.state.received += 1
            applied.add()

        async def totals(self, ctx: ActorContext[Balance], payload: None) -> list[int]:
            return [ctx.state.sent, ctx.state.received]

    return Account


class _TransferSlicer:
    """Transfers by ``concurrency`` clients: a ``Slicer`` whose slices wait for the credits."""

    def __init__(self, sides: TransferSides, concurrency: int) -> None:
        self.sides = sides
        self.concurrency = concurrency
        self.batches = 0
        """Group-commit batches during this side's slices (if the storage reports them)."""
        self.items = 0

    def _targets(self, client: int) -> list[str]:
        """The ids client ``client`` sends to, in turn: every account after its own."""
        sides, n = self.sides, self.concurrency
        return [sides.account((client + 1 + step) % n).id for step in range(n)]

    async def _debit(self, source: ActorId, to: str) -> None:
        self.sides.sent += 1
        await self.sides.runtime.invoke(source, "debit", to)

    def _calls(self) -> list[Call]:
        """One call per client: a debit of its account to the next of its targets, in turn.

        As lean as ``TransferSides.plain``'s calls: the bench's own bytecodes
        count on one side only.
        """
        sides = self.sides
        invoke = sides.runtime.invoke
        calls: list[Call] = []
        for client in range(self.concurrency):
            source, targets = sides.account(client), itertools.cycle(self._targets(client))

            async def once(
                source: ActorId = source, next_target: Callable[[], str] = targets.__next__
            ) -> None:
                sides.sent += 1
                await invoke(source, "debit", next_target())

            calls.append(once)
        return calls

    async def warm_up(self) -> None:
        """Every client sends once to every target, then waits for the credits.

        The first message of a (sender, target) pair reads the sender's
        counter for that target and the target's mark for that sender; later
        ones find both in the activations' caches. A slice of a few seconds
        would otherwise pay those first contacts (n x (n - 1) of them) inside
        its figure -- at 64 actors about one transfer in six of a 3 s run --
        and report a ratio that depends on ``--seconds``, not the steady state.
        """

        async def every_target(client: int) -> None:
            source = self.sides.account(client)
            for to in self._targets(client):
                await self._debit(source, to)

        await asyncio.gather(*(every_target(client) for client in range(self.concurrency)))
        await self.sides.drain()

    async def run_slice(self, seconds: float, into: Sample) -> None:
        before = self.sides.batch_stats()
        started = time.perf_counter()
        part = Sample()
        await run_slice(self._calls(), seconds, part)
        await self.sides.drain()
        after = self.sides.batch_stats()
        if before is not None and after is not None:
            self.batches += after[0] - before[0]
            self.items += after[1] - before[1]
        elapsed = time.perf_counter() - started  # the drain included
        into.done += part.done
        into.latencies += part.latencies
        into.elapsed += elapsed
        into.rates.append(part.done / elapsed if elapsed > 0 else 0.0)


class TransferSides:
    """One runtime on a storage, accounts ``namespace/t0..``: plain deposits and transfers."""

    def __init__(self, storage: Storage, namespace: str, drain_timeout: float = 60.0) -> None:
        self.storage = storage
        self.namespace = namespace
        self.applied = Applied()
        self.runtime = Runtime(storage)
        self.runtime.register(namespace, account_class(self.applied))
        self.drain_timeout = drain_timeout
        self.sent = 0
        """Debits started (each sends one credit once it commits)."""
        self.used = 0
        """Accounts ``t0..t{used-1}`` were touched."""
        self._accounts: list[ActorId] = []

    def account(self, index: int) -> ActorId:
        """Account ``t{index}``: one ``ActorId`` object per account, whichever side asks.

        The runtime finds a mailbox by its id; an id equal to the one that
        made the mailbox but another object costs an ``__eq__`` per lookup,
        which one side would pay and the other not.
        """
        accounts = self._accounts
        while len(accounts) <= index:
            accounts.append(ActorId(self.namespace, f"t{len(accounts)}"))
        return accounts[index]

    def plain(self, concurrency: int) -> list[Call]:
        """One client per account ``0..concurrency-1``, each depositing 1 (one commit)."""
        self.used = max(self.used, concurrency)
        invoke = self.runtime.invoke
        calls: list[Call] = []
        for index in range(concurrency):
            actor = self.account(index)

            async def once(actor: ActorId = actor) -> None:
                await invoke(actor, "deposit", 1)

            calls.append(once)
        return calls

    def transfers(self, concurrency: int) -> _TransferSlicer:
        """Client i debits account i and sends the credit to the others in turn."""
        self.used = max(self.used, concurrency)
        return _TransferSlicer(self, concurrency)

    async def drain(self) -> None:
        """Wait until every credit sent so far was applied."""
        await self.applied.reach(self.sent, self.drain_timeout)

    def batch_stats(self) -> tuple[int, int] | None:
        return read_batch_stats(self.storage)

    async def check(self) -> None:
        """Every committed debit's credit was applied exactly once (``RuntimeError`` if not)."""
        sent = received = 0
        for index in range(self.used):
            debits, credits = await self.runtime.invoke(self.account(index), "totals")
            sent += debits
            received += credits
        if sent != received:
            raise RuntimeError(f"{sent:,} debits committed but {received:,} credits applied")

    def close_for(self, owns_store: bool) -> Callable[[], Awaitable[None]]:
        async def close() -> None:
            await self.close(owns_store=owns_store)

        return close

    async def close(self, *, owns_store: bool) -> None:
        """Close the runtime; delete every account and the index entries that name them."""
        try:
            await self.runtime.close()
        finally:
            for index in range(self.used):
                await delete_actor_keys(self.storage, self.account(index))
            await remove_index_entries(self.storage, self.namespace, delete_empty=owns_store)


async def remove_index_entries(storage: Storage, namespace: str, *, delete_empty: bool) -> None:
    """Delete the messaging index entries naming actors of ``namespace`` (ADR 0018).

    One transaction per shard (it reads the entries, so a concurrent sweep's
    change makes it conflict, and it is retried). With ``delete_empty`` a
    shard left without entries is removed with ``delete_actor``: only safe when
    no other runtime uses the store, since an index write never conflicts.
    """
    for shard in records.index_shards():
        for attempt in range(5):
            try:
                left = await _remove_from_shard(storage, shard, namespace)
                break
            except Exception:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * 2**attempt)
        if delete_empty and not left:
            # A backend without delete_actor: a shard without keys is all it can do.
            with contextlib.suppress(UnsupportedOperationError):
                await lifecycle.delete_actor(storage, shard)


async def _remove_from_shard(storage: Storage, shard: ActorId, namespace: str) -> int:
    """Remove ``namespace``'s entries from ``shard``; the number of entries left."""
    async with storage.transaction(shard) as txn:
        keys = await txn.list_keys()
        left = len(keys)
        for key in keys:
            raw = await txn.get(key)
            if raw is None:
                continue
            try:
                actor, _ = records.decode_actor(raw, f"index entry of {shard}")
            except ValueError:
                continue
            if actor.namespace == namespace:
                await txn.delete(key)
                left -= 1
        return left


@dataclass
class TransferRow:
    """One figure: plain invocations and transfers at one concurrency on one backend."""

    backend: str
    concurrency: int
    plain: Sample
    transfers: Sample
    mean_batch: float | None = None
    """Commits per group-commit batch during the transfers, if the storage reports it."""

    @property
    def ratio(self) -> float | None:
        """Transfers/s over plain invocations/s."""
        if not self.plain.rate:
            return None
        return self.transfers.rate / self.plain.rate

    @property
    def slice_ratios(self) -> list[float]:
        """The ratio of each round of slices (a transfer slice over the plain one beside it).

        Their spread shows how much the machine's speed moved during the
        figure; the pooled ``ratio`` is the figure.
        """
        pairs = zip(self.transfers.rates, self.plain.rates, strict=False)
        return [transfers / plain for transfers, plain in pairs if plain > 0]


_COLUMNS = [
    ("backend", 11),
    ("actors", 6),
    ("inv/s", 9),
    ("p99 ms", 8),
    ("transfers/s", 11),
    ("debit p99 ms", 12),
    ("ratio", 6),
    ("batch", 6),
]


def _line(cells: Sequence[str]) -> str:
    widths = [width for _, width in _COLUMNS]
    out = [cells[0].ljust(widths[0])]
    out += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
    return "  ".join(out).rstrip()


def format_transfer_header() -> str:
    return _line([title for title, _ in _COLUMNS])


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def format_transfer_row(row: TransferRow) -> str:
    return _line(
        [
            row.backend,
            str(row.concurrency),
            f"{row.plain.rate:,.0f}",
            _ms(row.plain.p99_ms),
            f"{row.transfers.rate:,.0f}",
            _ms(row.transfers.p99_ms),
            f"{row.ratio:.2f}" if row.ratio is not None else NA,
            f"{row.mean_batch:.1f}" if row.mean_batch is not None else "-",
        ]
    )


def transfer_summary_lines(rows: Sequence[TransferRow]) -> list[str]:
    """Per backend: the ratio at every concurrency, and issue 16's target at the highest."""
    lines = []
    for backend in dict.fromkeys(row.backend for row in rows):
        mine = sorted((row for row in rows if row.backend == backend), key=lambda r: r.concurrency)
        parts = [f"{row.ratio:.2f}x at {row.concurrency}" for row in mine if row.ratio is not None]
        top = mine[-1]
        verdict = ""
        if top.ratio is not None:
            met = "met" if top.ratio >= TARGET else "missed"
            spread = top.slice_ratios
            if len(spread) > 1:  # how far the machine's speed moved under this figure
                spread_text = f"; its {len(spread)} slices {min(spread):.2f}-{max(spread):.2f}"
            else:
                spread_text = ""
            verdict = f" (issue 16 target >= {TARGET:g}x at {top.concurrency}: {met}{spread_text})"
        lines.append(f"{backend}: transfers/s / inv/s: {', '.join(parts) or NA}{verdict}")
    return lines


async def bench_transfers(
    target: Target,
    options: BenchOptions,
    *,
    namespace: str | None = None,
    owns_store: bool = False,
    emit: Callable[[TransferRow], None] = lambda row: None,
    begin: Callable[[int, int], None] = lambda keys, concurrency: None,
) -> list[TransferRow]:
    """Measure ``target`` at every concurrency of ``options``; clean up whatever happens.

    ``owns_store``: nobody else uses the store (the bench made it), so index
    shards left empty may be deleted too.
    """
    namespace = namespace or new_namespace()
    storage = open_storage(target.url)
    rows: list[TransferRow] = []
    sides: TransferSides | None = None
    failed = False
    try:
        sides = TransferSides(storage, namespace, drain_timeout=max(60.0, 10 * options.seconds))
        for concurrency in options.concurrencies:
            begin(0, concurrency)  # 0: no keys in the progress line
            plain = sides.plain(concurrency)
            moving = sides.transfers(concurrency)
            await warm_up(plain)
            await moving.warm_up()
            moving.batches = moving.items = 0
            samples = await alternate(
                {"plain": plain, "transfers": moving}, options.seconds, options.slices
            )
            row = TransferRow(
                backend=target.label,
                concurrency=concurrency,
                plain=samples["plain"],
                transfers=samples["transfers"],
                mean_batch=moving.items / moving.batches if moving.batches else None,
            )
            rows.append(row)
            emit(row)
        await sides.check()
    except BaseException:
        failed = True
        raise
    finally:
        first: BaseException | None = None
        closers = [storage.close] if sides is None else [sides.close_for(owns_store), storage.close]
        for close in closers:
            try:
                await close()
            except Exception as exc:
                first = first or exc
        if first is not None and not failed:
            raise first
    return rows
