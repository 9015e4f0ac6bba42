from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kelpie import Runtime, Storage
from tests.runtime.actors import EVENTS, BankAccount, KeyValueActor, LifecycleActor
from tests.runtime.scripted_storage import ScriptedStorage


def register_all(runtime: Runtime) -> Runtime:
    runtime.register("account", BankAccount)
    runtime.register("kv", KeyValueActor)
    runtime.register("life", LifecycleActor)
    return runtime


@pytest.fixture
def scripted(storage: Storage) -> ScriptedStorage:
    return ScriptedStorage(storage)


@pytest.fixture
async def runtime(scripted: ScriptedStorage) -> AsyncIterator[Runtime]:
    EVENTS.reset()
    rt = register_all(Runtime(scripted, invocation_timeout=5.0))
    yield rt
    await rt.close()
