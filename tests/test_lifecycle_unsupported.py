"""Third-party backends written before ``list_actors``/``delete_actor``: named gaps, no crash.

Two shapes of an old backend: a plain class with only the methods the
protocol had before (no ``list_actors``, no ``delete_actor`` at all), and a
``StorageBase`` subclass that never overrode ``_list_actors``/``_delete_actor``.
Both keep working for everything else -- storage calls, transactions, a
``Runtime`` on top, a wrapper around them, the conformance suite (whose
lifecycle tests skip with the reason) -- and whatever needs the new methods
raises ``UnsupportedOperationError`` naming the backend (its URL scheme, or its
class when it was not opened through a URL) and the method.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import pytest

from kelpie import Actor, ActorContext, Runtime
from kelpie.errors import StorageError, UnsupportedOperationError
from kelpie.identity import ActorId
from kelpie.storage import lifecycle
from kelpie.storage.base import BufferedTransaction, StorageBase, Writes
from kelpie.storage.memory import MemoryStorage
from kelpie.storage.protocol import Storage, Transaction
from kelpie.storage.registry import open_storage, register_scheme
from kelpie.storage.wrapper import StorageWrapper

pytest_plugins = ["pytester"]

ALICE = ActorId("counter", "alice")


class OldPlainStorage:
    """Only the protocol of the previous release (it keeps its data in a memory store)."""

    def __init__(self) -> None:
        self._inner = MemoryStorage()

    async def get(self, actor: ActorId, key: bytes) -> bytes | None:
        return await self._inner.get(actor, key)

    async def set(self, actor: ActorId, key: bytes, value: bytes) -> None:
        await self._inner.set(actor, key, value)

    async def delete(self, actor: ActorId, key: bytes) -> None:
        await self._inner.delete(actor, key)

    async def list_keys(self, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        return await self._inner.list_keys(actor, prefix)

    def transaction(self, actor: ActorId) -> Transaction:
        return self._inner.transaction(actor)

    async def close(self) -> None:
        await self._inner.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _DictTransaction(BufferedTransaction):
    _storage: OldBaseStorage

    def __init__(self, storage: OldBaseStorage, actor: ActorId) -> None:
        super().__init__(storage, actor)
        self._read_version: int | None = None

    def _note(self) -> dict[bytes, bytes]:
        version, records = self._storage.data.get(self.actor, (0, {}))
        if self._read_version is None:
            self._read_version = version
        return records

    async def _read(self, key: bytes) -> bytes | None:
        return self._note().get(key)

    async def _read_keys(self, prefix: bytes) -> list[bytes]:
        return [key for key in self._note() if key.startswith(prefix)]

    async def _commit(self, writes: Writes) -> None:
        version, records = self._storage.data.get(self.actor, (0, {}))
        if self._read_version is not None and version != self._read_version:
            from kelpie.errors import TransactionConflictError

            raise TransactionConflictError(f"{self.actor} changed")
        records = dict(records)
        for key, value in writes.items():
            if value is None:
                records.pop(key, None)
            else:
                records[key] = value
        self._storage.data[self.actor] = (version + 1, records)


class OldBaseStorage(StorageBase):
    """A ``StorageBase`` subclass of the previous release: no ``_list_actors``/``_delete_actor``."""

    def __init__(self) -> None:
        self.data: dict[ActorId, tuple[int, dict[bytes, bytes]]] = {}

    async def _get(self, actor: ActorId, key: bytes) -> bytes | None:
        return self.data.get(actor, (0, {}))[1].get(key)

    async def _list_keys(self, actor: ActorId, prefix: bytes) -> list[bytes]:
        return sorted(k for k in self.data.get(actor, (0, {}))[1] if k.startswith(prefix))

    def _transaction(self, actor: ActorId) -> _DictTransaction:
        return _DictTransaction(self, actor)

    async def _close(self) -> None:
        return None


def _open_plain(url: str, **options: Any) -> OldPlainStorage:
    return OldPlainStorage()


def _open_base(url: str, **options: Any) -> OldBaseStorage:
    return OldBaseStorage()


register_scheme("oldplain", _open_plain)  # type: ignore[arg-type]  # not today's Storage
register_scheme("oldbase", _open_base)


@dataclass
class Count:
    n: int = 0


class Counter(Actor[Count]):
    state_type = Count

    async def add(self, ctx: ActorContext[Count], payload: int) -> int:
        ctx.state.n += payload
        await ctx.kv_set(b"last", b"%d" % payload)
        return ctx.state.n


def _assert_names(error: UnsupportedOperationError, backend: str, method: str) -> None:
    message = str(error)
    assert backend in message, message
    assert f"{method}()" in message, message


async def _everything_else_works(storage: Storage) -> None:
    await storage.set(ALICE, b"k", b"v")
    assert await storage.get(ALICE, b"k") == b"v"
    async with storage.transaction(ALICE) as txn:
        assert await txn.list_keys() == [b"k"]
        await txn.delete(b"k")
    assert await storage.list_keys(ALICE) == []
    async with Runtime(storage) as runtime:
        runtime.register("counter", Counter)
        assert await runtime.invoke(ALICE, "add", 2) == 2
        assert await runtime.invoke(ALICE, "add", 3) == 5
    assert await storage.get(ALICE, b"last") is None  # actor keys live under their own prefix
    assert len(await storage.list_keys(ALICE)) >= 2  # the state and the KV key


@pytest.mark.parametrize(
    ("scheme", "cls"), [("oldplain", OldPlainStorage), ("oldbase", OldBaseStorage)]
)
async def test_an_old_backend_opened_by_url_names_its_scheme_and_the_missing_method(
    scheme: str, cls: type[Any]
) -> None:
    storage = open_storage(f"{scheme}://somewhere")
    assert isinstance(storage, cls)
    try:
        with pytest.raises(UnsupportedOperationError) as listing:
            await lifecycle.list_actors(storage, "counter")
        _assert_names(listing.value, scheme, "list_actors")
        with pytest.raises(UnsupportedOperationError) as deleting:
            await lifecycle.delete_actor(storage, ALICE)
        _assert_names(deleting.value, scheme, "delete_actor")
        with pytest.raises(UnsupportedOperationError):
            async for _ in lifecycle.iter_actors(storage):
                pass
        assert isinstance(listing.value, StorageError)
        await _everything_else_works(storage)
    finally:
        await storage.close()


async def test_a_storage_base_subclass_without_the_methods_names_its_class() -> None:
    storage = OldBaseStorage()  # not opened through a URL: no scheme to name
    try:
        assert lifecycle.supports(storage, "list_actors")  # inherited, and it says why it fails
        with pytest.raises(UnsupportedOperationError) as listing:
            await storage.list_actors()
        _assert_names(listing.value, "OldBaseStorage", "list_actors")
        with pytest.raises(UnsupportedOperationError) as deleting:
            await storage.delete_actor(ALICE)
        _assert_names(deleting.value, "OldBaseStorage", "delete_actor")
        with pytest.raises(ValueError):  # arguments are still checked first, as everywhere
            await storage.list_actors(limit=0)
        await _everything_else_works(storage)
    finally:
        await storage.close()


async def test_a_plain_old_backend_has_no_methods_and_a_wrapper_names_what_it_wraps() -> None:
    inner = open_storage("oldplain://x")
    assert not lifecycle.supports(inner, "list_actors")
    assert not lifecycle.supports(inner, "delete_actor")
    wrapper = StorageWrapper(inner)
    try:
        with pytest.raises(UnsupportedOperationError) as listing:
            await wrapper.list_actors("counter", limit=10)
        _assert_names(listing.value, "oldplain", "list_actors")
        with pytest.raises(UnsupportedOperationError) as deleting:
            await wrapper.delete_actor(ALICE)
        _assert_names(deleting.value, "oldplain", "delete_actor")
        await _everything_else_works(wrapper)
    finally:
        await wrapper.close()


@pytest.mark.parametrize("scheme", ["oldplain", "oldbase"])
def test_the_conformance_suite_skips_the_lifecycle_tests_of_an_old_backend_with_the_reason(
    pytester: pytest.Pytester, scheme: str
) -> None:
    result = pytester.runpytest_inprocess(
        "--pyargs",
        "kelpie.testing.conformance.test_actor_lifecycle",
        "kelpie.testing.conformance.test_transactions",
        "-p",
        "kelpie.testing.plugin",
        "-p",
        "tests.test_lifecycle_unsupported",
        f"--storage-url={scheme}://{uuid.uuid4().hex}",
        "--no-reopen",
        "-rs",
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, outcomes
    assert outcomes.get("passed", 0) >= 5, outcomes  # the transaction tests
    assert outcomes.get("skipped", 0) >= 15, outcomes  # every lifecycle test
    result.stdout.fnmatch_lines([f"SKIPPED *the {scheme} backend does not implement*"])
