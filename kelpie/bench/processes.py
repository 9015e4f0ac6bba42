"""Kelpie's side of a figure run by several runtime processes on one store.

``kelpie bench --processes N``: N spawned processes each open the storage
URL themselves and host their share of the figure's actors in their own
``Runtime`` (actor ``i`` of the figure lives in process ``i mod N``), as a
deployment of N runtimes sharing one store would (docs/scale-out.md). The
parent sends each slice to every process at once and merges their samples:
invocations add up, the slice lasts as long as the slowest process, every
latency counts. Only stores that several processes can share qualify (LMDB,
Redis); the raw baseline stays in the parent.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.connection import Connection
from typing import Any

from kelpie.bench.timing import Sample, run_slice, warm_up
from kelpie.bench.workload import KelpieSide
from kelpie.storage import open_storage

__all__ = ["ProcessFigure", "ProcessSide"]


class ProcessSide:
    """N runtime processes on the store ``url``, driven from this process."""

    def __init__(self, url: str, namespace: str, processes: int) -> None:
        if processes < 2:
            raise ValueError("ProcessSide needs at least two processes")
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._workers: list[Any] = []
        self._stats: list[tuple[int, int]] = [(0, 0)] * processes
        """Each process's ``(batches, items)`` of group commit, as last reported."""
        for index in range(processes):
            parent, child = context.Pipe()
            worker = context.Process(
                target=_serve,
                args=(url, namespace, f"a{index}-", child),
                name=f"kelpie-bench-{index}",
                daemon=True,
            )
            worker.start()
            child.close()
            self._pipes.append(parent)
            self._workers.append(worker)

    def figure(self, concurrency: int, keys: int) -> ProcessFigure:
        return ProcessFigure(self, concurrency, keys)

    def shares(self, concurrency: int) -> list[list[int]]:
        """The figure's actor numbers per process: actor ``i`` in process ``i mod N``."""
        n = len(self._pipes)
        return [list(range(index, concurrency, n)) for index in range(n)]

    def batch_stats(self) -> tuple[int, int]:
        return sum(s[0] for s in self._stats), sum(s[1] for s in self._stats)

    def note_stats(self, index: int, stats: tuple[int, int]) -> None:
        self._stats[index] = stats

    async def ask(self, messages: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Send ``messages[i]`` to process ``i``, all at once; their answers."""
        for pipe, message in zip(self._pipes, messages, strict=True):
            pipe.send(message)
        answers = await asyncio.gather(*(asyncio.to_thread(pipe.recv) for pipe in self._pipes))
        for answer in answers:
            if answer[0] == "error":
                raise RuntimeError(f"a bench process failed: {answer[1]}")
        return [answer[1:] for answer in answers]

    async def close(self) -> None:
        """Each process closes its runtime, deletes its actors' keys and exits."""
        try:
            await self.ask([("close",)] * len(self._pipes))
        finally:
            for pipe in self._pipes:
                pipe.close()
            for worker in self._workers:
                await asyncio.to_thread(worker.join, 10.0)
                if worker.is_alive():  # pragma: no cover - a stuck child
                    worker.kill()


class ProcessFigure:
    """One (concurrency, keys) figure of a ``ProcessSide``: a ``Slicer``."""

    def __init__(self, side: ProcessSide, concurrency: int, keys: int) -> None:
        self._side = side
        self._shares = side.shares(concurrency)
        self._keys = keys

    async def warm_up(self) -> None:
        await self._side.ask([("warm", actors, self._keys) for actors in self._shares])

    async def run_slice(self, seconds: float, into: Sample) -> None:
        answers = await self._side.ask(
            [("slice", actors, self._keys, seconds) for actors in self._shares]
        )
        elapsed = 0.0
        slice_done = 0
        for index, (done, spent, latencies, stats) in enumerate(answers):
            slice_done += done
            into.latencies.extend(latencies)
            elapsed = max(elapsed, spent)
            self._side.note_stats(index, stats)
        into.done += slice_done
        into.elapsed += elapsed
        into.rates.append(slice_done / elapsed if elapsed > 0 else 0.0)


def _serve(url: str, namespace: str, tag: str, pipe: Connection) -> None:
    """A bench process: answer the parent's messages until ``close``."""
    asyncio.run(_serve_async(url, namespace, tag, pipe))


async def _serve_async(url: str, namespace: str, tag: str, pipe: Connection) -> None:
    storage = open_storage(url)
    side = KelpieSide(storage, namespace, tag)
    try:
        while True:
            message = await asyncio.to_thread(pipe.recv)
            if message[0] == "close":
                break
            try:
                pipe.send(("ok", *await _answer(side, message)))
            except Exception as exc:
                pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        try:
            await side.close()
            await storage.close()
        except Exception as exc:
            pipe.send(("error", f"closing: {type(exc).__name__}: {exc}"))
        else:
            pipe.send(("ok",))
        pipe.close()


async def _answer(side: KelpieSide, message: tuple[Any, ...]) -> tuple[Any, ...]:
    """``("warm", actors, keys)`` or ``("slice", actors, keys, seconds)``."""
    kind, actors, keys, *rest = message
    calls = side.calls_for(actors, keys)
    if kind == "warm":
        await warm_up(calls)
        return ()
    (seconds,) = rest
    sample = Sample()
    if calls:
        await run_slice(calls, seconds, sample)
    return sample.done, sample.elapsed, sample.latencies, side.batch_stats() or (0, 0)
