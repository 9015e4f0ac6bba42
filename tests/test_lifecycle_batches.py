"""``delete_actor`` shares the group-commit batches of commits on the embedded backends.

A delete is one more job of the batch (memory's ``Batcher``, LMDB's write
transaction, SQLite's ``BEGIN IMMEDIATE`` batch), applied in submission order
with the commits around it: a commit queued before the delete is removed by
it, one queued after it lands on a fresh actor, and a stale one fails -- even
inside one batch. And a damaged deletes counter is a ``CorruptStateError``,
never a crash or a silent reset.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import lmdb
import pytest

from kelpie.errors import CorruptStateError, TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage.registry import open_storage

A = ActorId("batch", "a")
B = ActorId("batch", "b")


def _url(backend: str, tmp_path: Path) -> str:
    return {
        "memory": "memory://?commit_latency=0.001",  # else nothing waits: batches of one
        "lmdb": f"lmdb://{tmp_path / 'l'}",
        "sqlite": f"sqlite://{tmp_path / 's.db'}",
    }[backend]


@pytest.mark.parametrize("backend", ["memory", "lmdb", "sqlite"])
async def test_deletes_and_commits_in_one_batch_apply_in_order(
    backend: str, tmp_path: Path
) -> None:
    storage: Any = open_storage(_url(backend, tmp_path))
    try:
        await storage.set(A, b"old", b"1")
        stale = storage.transaction(A)
        assert await stale.get(b"old") == b"1"
        await stale.set(b"old", b"stale")
        before = storage.batch_stats

        async def stale_commit() -> None:
            with pytest.raises(TransactionConflictError):
                await stale.commit()

        # Queued together: the first leads alone, the rest share batches, in this order.
        await asyncio.gather(
            storage.set(A, b"before", b"x"),
            storage.set(B, b"before", b"x"),
            storage.delete_actor(A),
            stale_commit(),
            storage.set(A, b"after", b"y"),
            storage.delete_actor(B),
            storage.delete_actor(B),
        )
        batches, items = (now - then for now, then in zip(storage.batch_stats, before, strict=True))
        assert items == 7
        assert batches < items  # some of them shared a batch
        assert await storage.list_keys(A) == [b"after"]
        assert await storage.get(A, b"old") is None
        assert await storage.list_keys(B) == []
        assert await storage.list_actors("batch") == [A]
    finally:
        await storage.close()


async def test_a_damaged_lmdb_deletes_counter_is_corrupt_state(tmp_path: Path) -> None:
    url = _url("lmdb", tmp_path)
    storage = open_storage(url)
    await storage.set(A, b"k", b"v")
    await storage.close()
    env = lmdb.open(str(tmp_path / "l"), max_dbs=3)
    try:
        with env.begin(write=True) as txn:
            txn.put(b"deletes", b"bad", db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()
    storage = open_storage(url)
    try:
        with pytest.raises(CorruptStateError):
            await storage.delete_actor(A)
        with pytest.raises(CorruptStateError):
            await storage.set(B, b"k", b"new actor")  # its first version comes from the counter
        assert await storage.get(A, b"k") == b"v"  # nothing was written
        await storage.set(A, b"k", b"2")  # an existing actor does not need the counter
        assert await storage.list_actors() == [A]
    finally:
        await storage.close()
