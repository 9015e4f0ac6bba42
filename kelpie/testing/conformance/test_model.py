"""Model-based test: random operations on a few actors, checked against a plain dict.

The oracle is a dict per actor plus a commit counter per actor, written here
from the contract alone; no code under test is reused. The state machine is
synchronous (Hypothesis drives it), so each run owns an event loop and opens
its own ``Storage`` on the test's store; every run uses fresh actor ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    precondition,
    rule,
    run_state_machine_as_test,
)

from kelpie.errors import TransactionClosedError, TransactionConflictError
from kelpie.identity import ActorId
from kelpie.storage import lifecycle
from kelpie.storage.protocol import Storage, Transaction
from kelpie.testing.backends import StoreHandle
from kelpie.testing.plugin import reopen_disabled

__all__ = ["StorageModelMachine", "TestModel"]

T = TypeVar("T")

ACTORS = 3
MAX_OPEN_TRANSACTIONS = 4

keys = st.one_of(
    st.sampled_from(
        [b"a", b"ab", b"abc", b"b", b"\x00", b"\x00\x00", b"\xff", b"\xff\xff", b"a\xff"]
    ),
    st.binary(min_size=1, max_size=3),
)
values = st.binary(max_size=6)
prefixes = st.one_of(
    st.sampled_from([b"", b"a", b"ab", b"\x00", b"\xff", b"c"]), st.binary(max_size=2)
)
actor_indexes = st.integers(min_value=0, max_value=ACTORS - 1)
slots = st.integers(min_value=0, max_value=MAX_OPEN_TRANSACTIONS - 1)


class _BodyFailed(Exception):
    pass


@dataclass
class _Commits:
    """Commits that landed on one actor: ``writing`` ones, and ``any`` including empty ones."""

    writing: int = 0
    any: int = 0


@dataclass
class _OpenTxn:
    txn: Transaction
    actor: int
    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    # Set at the first read that must have gone to storage: the commit
    # counters then, and the actor's records then (a backend may serve later
    # reads from that snapshot or from the latest commit).
    read_at: _Commits | None = None
    snapshot: dict[bytes, bytes] | None = None
    # Set at the first read served from the transaction's own writes, which a
    # backend may or may not count as a read for conflicts.
    soft_read_at: _Commits | None = None


def _commit_outcome(entry: _OpenTxn, now: _Commits) -> str:
    """What the contract allows ``entry.txn.commit()`` to do: commit, conflict, or either."""
    if entry.read_at is not None:
        if entry.read_at.writing != now.writing:
            # A commit with nothing to write may be skipped, conflict-free.
            return "conflict" if entry.writes else "either"
        if entry.read_at.any != now.any:
            return "either"  # only empty commits landed; a backend may count them
        return "commit"
    if entry.soft_read_at is not None and entry.soft_read_at.any != now.any:
        return "either"  # a read served from its own writes may or may not count
    return "commit"


class StorageModelMachine(RuleBasedStateMachine):
    """Set, delete, get, list_keys and transactions on a few actors, against a dict model."""

    def __init__(self, handle: StoreHandle, *, reopen: bool = True) -> None:
        super().__init__()
        self.handle = handle
        self.reopen = reopen
        self.loop = asyncio.new_event_loop()
        run_id = uuid.uuid4().hex
        self.actors = [ActorId("conformance-model", f"{run_id}-{n}") for n in range(ACTORS)]
        self.model: list[dict[bytes, bytes]] = [{} for _ in range(ACTORS)]
        self.commits = [_Commits() for _ in range(ACTORS)]
        self.open: list[_OpenTxn] = []
        self.closed: list[Transaction] = []
        self.storage: Storage = self.run(self._open())

    # -- plumbing -------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _open(self) -> Storage:
        return self.handle.open()

    def teardown(self) -> None:
        try:
            for entry in self.open:
                with contextlib.suppress(Exception):
                    self.run(entry.txn.abort())
            with contextlib.suppress(Exception):  # leave nothing behind in a user's store
                for actor in self.actors:
                    self.run(lifecycle.delete_actor(self.storage, actor))
            self.run(self.storage.close())
        finally:
            self.loop.close()

    def _landed(self, actor: int, *, wrote: bool) -> None:
        commits = self.commits[actor]
        commits.any += 1
        if wrote:
            commits.writing += 1

    def _entry(self, slot: int) -> _OpenTxn:
        return self.open[slot % len(self.open)]

    def _seen(self, entry: _OpenTxn) -> list[dict[bytes, bytes]]:
        """The records a read in ``entry`` may see: the latest, or its first read's snapshot."""
        latest = self.model[entry.actor]
        if entry.snapshot is None or entry.read_at is None:
            return [latest]
        if entry.read_at.writing == self.commits[entry.actor].writing:
            return [latest]
        return [latest, entry.snapshot]

    def _note_read(self, entry: _OpenTxn) -> None:
        if entry.read_at is None:
            commits = self.commits[entry.actor]
            entry.read_at = _Commits(commits.writing, commits.any)
            entry.snapshot = dict(self.model[entry.actor])

    # -- outside any transaction ----------------------------------------------

    @rule(actor=actor_indexes, key=keys, value=values)
    def set(self, actor: int, key: bytes, value: bytes) -> None:
        self.run(self.storage.set(self.actors[actor], key, value))
        self.model[actor][key] = value
        self._landed(actor, wrote=True)

    @rule(actor=actor_indexes, key=keys)
    def delete(self, actor: int, key: bytes) -> None:
        self.run(self.storage.delete(self.actors[actor], key))
        self.model[actor].pop(key, None)
        self._landed(actor, wrote=True)

    @rule(actor=actor_indexes, key=keys)
    def get(self, actor: int, key: bytes) -> None:
        assert self.run(self.storage.get(self.actors[actor], key)) == self.model[actor].get(key)

    @rule(actor=actor_indexes, prefix=prefixes)
    def list_keys(self, actor: int, prefix: bytes) -> None:
        expected = sorted(k for k in self.model[actor] if k.startswith(prefix))
        assert self.run(self.storage.list_keys(self.actors[actor], prefix)) == expected

    @rule()
    def everything_matches(self) -> None:
        for actor, records in zip(self.actors, self.model, strict=True):
            assert self.run(self.storage.list_keys(actor)) == sorted(records)
            for key, value in records.items():
                assert self.run(self.storage.get(actor, key)) == value

    @precondition(lambda self: self.reopen and not self.open)
    @rule()
    def close_and_reopen(self) -> None:
        self.run(self.storage.close())
        self.storage = self.run(self._open())

    # -- transactions ----------------------------------------------------------

    @rule(
        actor=actor_indexes,
        writes=st.lists(st.tuples(keys, st.none() | values), min_size=1, max_size=6),
        fail=st.booleans(),
    )
    def write_block(self, actor: int, writes: list[tuple[bytes, bytes | None]], fail: bool) -> None:
        """A write-only ``async with`` block: commits all of it, or (on raise) none."""

        async def block() -> None:
            async with self.storage.transaction(self.actors[actor]) as txn:
                for key, value in writes:
                    if value is None:
                        await txn.delete(key)
                    else:
                        await txn.set(key, value)
                if fail:
                    raise _BodyFailed

        try:
            self.run(block())
        except _BodyFailed:
            assert fail
            return
        records = self.model[actor]
        for key, value in writes:
            if value is None:
                records.pop(key, None)
            else:
                records[key] = value
        self._landed(actor, wrote=True)

    @precondition(lambda self: len(self.open) < MAX_OPEN_TRANSACTIONS)
    @rule(actor=actor_indexes)
    def begin(self, actor: int) -> None:
        self.open.append(_OpenTxn(self.storage.transaction(self.actors[actor]), actor))

    @precondition(lambda self: bool(self.open))
    @rule(slot=slots, key=keys, value=values)
    def txn_set(self, slot: int, key: bytes, value: bytes) -> None:
        entry = self._entry(slot)
        self.run(entry.txn.set(key, value))
        entry.writes[key] = value

    @precondition(lambda self: bool(self.open))
    @rule(slot=slots, key=keys)
    def txn_delete(self, slot: int, key: bytes) -> None:
        entry = self._entry(slot)
        self.run(entry.txn.delete(key))
        entry.writes[key] = None

    @precondition(lambda self: bool(self.open))
    @rule(slot=slots, key=keys)
    def txn_get(self, slot: int, key: bytes) -> None:
        entry = self._entry(slot)
        got = self.run(entry.txn.get(key))
        if key in entry.writes:
            if entry.soft_read_at is None:
                commits = self.commits[entry.actor]
                entry.soft_read_at = _Commits(commits.writing, commits.any)
            assert got == entry.writes[key]
            return
        allowed = [records.get(key) for records in self._seen(entry)]
        self._note_read(entry)
        assert got in allowed, (got, allowed)

    @precondition(lambda self: bool(self.open))
    @rule(slot=slots, prefix=prefixes)
    def txn_list_keys(self, slot: int, prefix: bytes) -> None:
        entry = self._entry(slot)
        got = self.run(entry.txn.list_keys(prefix))
        allowed = []
        for records in self._seen(entry):
            merged = {k for k in records if k.startswith(prefix)}
            for key, value in entry.writes.items():
                if key.startswith(prefix):
                    if value is None:
                        merged.discard(key)
                    else:
                        merged.add(key)
            allowed.append(sorted(merged))
        self._note_read(entry)
        assert got in allowed, (got, allowed)

    @precondition(lambda self: bool(self.open))
    @rule(slot=slots)
    def txn_commit(self, slot: int) -> None:
        entry = self._entry(slot)
        self.open.remove(entry)
        self._keep_closed(entry.txn)
        must = _commit_outcome(entry, self.commits[entry.actor])
        try:
            self.run(entry.txn.commit())
        except TransactionConflictError:
            assert must != "commit", "a transaction conflicted with no commit after its read"
            return
        assert must != "conflict", "a commit landed after this transaction read, yet it committed"
        for key, value in entry.writes.items():
            if value is None:
                self.model[entry.actor].pop(key, None)
            else:
                self.model[entry.actor][key] = value
        self._landed(entry.actor, wrote=bool(entry.writes))

    @precondition(lambda self: bool(self.open))
    @rule(slot=slots)
    def txn_abort(self, slot: int) -> None:
        entry = self._entry(slot)
        self.open.remove(entry)
        self._keep_closed(entry.txn)
        self.run(entry.txn.abort())

    def _keep_closed(self, txn: Transaction) -> None:
        self.closed = [*self.closed[-2:], txn]

    @precondition(lambda self: bool(self.closed))
    @rule(slot=slots, operation=st.sampled_from(["get", "set", "delete", "list_keys", "commit"]))
    def closed_transaction_refuses(self, slot: int, operation: str) -> None:
        txn = self.closed[slot % len(self.closed)]
        call: Coroutine[Any, Any, object]
        if operation == "get":
            call = txn.get(b"k")
        elif operation == "set":
            call = txn.set(b"k", b"v")
        elif operation == "delete":
            call = txn.delete(b"k")
        elif operation == "list_keys":
            call = txn.list_keys()
        else:
            call = txn.commit()
        with pytest.raises(TransactionClosedError):
            self.run(call)


class TestModel:
    def test_storage_matches_a_dict_model(
        self, store_handle: StoreHandle, request: pytest.FixtureRequest
    ) -> None:
        examples: int = request.config.getoption("conformance_examples", default=100)
        reopen = not reopen_disabled(request.config)

        class Machine(StorageModelMachine):
            def __init__(self) -> None:
                super().__init__(store_handle, reopen=reopen)

        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=50,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
