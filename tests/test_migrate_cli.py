"""``kelpie migrate`` (issue 14): eager migration of one namespace, resumable, with a summary."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from kelpie import ActorId, Runtime, Storage, open_storage
from kelpie.actor.codec import StateRecord
from kelpie.actor.keys import STATE_KEY
from kelpie.cli import main
from kelpie.migrate_cli import migrate
from tests.test_state_migrations import V1, V2, V3

NS = "acct"


async def _seed(storage: Storage, count: int) -> list[ActorId]:
    actors = [ActorId(NS, f"a{i:02d}") for i in range(count)]
    async with Runtime(storage) as runtime:
        runtime.register(NS, V1)
        runtime.register("other", V1)
        for i, actor in enumerate(actors):
            await runtime.invoke(actor, "put", {"balance": i, "owner": f"o{i}"})
        await runtime.invoke(ActorId("other", "x"), "put", {"balance": 1})  # not this namespace
    return actors


async def _version(storage: Storage, actor: ActorId) -> int:
    raw = await storage.get(actor, STATE_KEY)
    assert raw is not None
    return StateRecord.decode(raw, "t").state_version


@pytest.mark.parametrize("storage_backend", ["memory", "lmdb", "redis"], indirect=True)
async def test_migrate_rewrites_old_actors_and_skips_current_ones(storage: Storage) -> None:
    actors = await _seed(storage, 5)
    dry = await migrate(storage, V3, NS, dry_run=True)
    assert (len(dry.migrated), len(dry.current), dry.failed) == (5, 0, [])
    assert [await _version(storage, a) for a in actors] == [1] * 5  # dry: nothing written
    done = await migrate(storage, V3, NS)
    assert (len(done.migrated), len(done.current), done.failed) == (5, 0, [])
    assert [await _version(storage, a) for a in actors] == [3] * 5
    assert await _version(storage, ActorId("other", "x")) == 1
    again = await migrate(storage, V3, NS)
    assert (len(again.migrated), len(again.current)) == (0, 5)
    async with Runtime(storage) as runtime:
        runtime.register(NS, V3)
        state = await runtime.invoke(actors[2], "get")
        assert state["cents"] == 200
        assert state["holder"]["name"] == "o2"


@pytest.mark.parametrize("storage_backend", ["memory", "lmdb", "redis"], indirect=True)
async def test_migrate_reports_failures_and_resumes_after(storage: Storage) -> None:
    actors = await _seed(storage, 4)
    await storage.set(actors[1], STATE_KEY, b"KLP-garbage")
    partial = await migrate(storage, V2, NS, after=actors[1])
    assert partial.migrated == actors[2:]
    summary = await migrate(storage, V3, NS)
    assert summary.migrated == [actors[0], *actors[2:]]
    assert [actor for actor, _ in summary.failed] == [actors[1]]
    assert "CorruptStateError" in summary.failed[0][1]
    older = await migrate(storage, V2, NS)  # the records are now newer than V2
    assert [actor for actor, _ in older.failed] == actors
    reasons = [reason.split(":")[0] for _, reason in older.failed]
    assert reasons == [
        "StateVersionTooNewError",
        "CorruptStateError",
        "StateVersionTooNewError",
        "StateVersionTooNewError",
    ]


async def _seed_url(url: str, count: int) -> list[ActorId]:
    storage = open_storage(url)
    try:
        return await _seed(storage, count)
    finally:
        await storage.close()


def test_the_command_line_migrates_prints_a_summary_and_sets_the_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"lmdb://{tmp_path}/store"
    actors = asyncio.run(_seed_url(url, 3))
    args = ["migrate", url, "--actor-class", "tests.test_state_migrations:V3", "--namespace", NS]

    assert main([*args, "--dry-run", "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert (report["dry_run"], report["migrated"], report["already_current"]) == (True, 3, 0)

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "migrated         3" in out
    assert "already current  0" in out

    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["migrated"], report["already_current"], report["failed"]) == (0, 3, [])
    assert report["last"] == [NS, actors[-1].id]

    older = ["migrate", url, "--actor-class", "tests.test_state_migrations:V2", "--namespace", NS]
    assert main(older) == 1
    captured = capsys.readouterr()
    assert "failed           3" in captured.out
    assert "StateVersionTooNewError" in captured.out
    # progress on stderr: each failure as it happens
    assert captured.err.count("failed: StateVersionTooNewError") == 3, captured.err


@pytest.mark.parametrize(
    "extra",
    [
        ["--actor-class", "tests.test_state_migrations:Nope", "--namespace", NS],
        ["--actor-class", "no_colon", "--namespace", NS],
        ["--actor-class", "tests.test_state_migrations:AccountV1", "--namespace", NS],
        ["--actor-class", "tests.test_state_migrations:V3"],
        ["--actor-class", "tests.test_state_migrations:V3", "--namespace", NS, "--after", "x"],
    ],
    ids=["missing-class", "no-colon", "not-an-actor", "no-namespace", "bad-after"],
)
def test_a_bad_option_is_exit_status_two(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", f"lmdb://{tmp_path}/s", *extra]) == 2
    assert "kelpie migrate:" in capsys.readouterr().err
