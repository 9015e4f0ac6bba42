"""``kelpie actors/show/delete``, run as a user runs them: output and exit status.

Each test calls the command's ``main()`` in-process (stdout and stderr
captured) on stores written through the public API; the copy chain across
backends, with a kill, is in ``test_cli_lifecycle_copy.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kelpie import ActorId, Runtime, open_storage
from kelpie.actor.keys import STATE_KEY, user_key
from kelpie.cli import main
from kelpie.storage.protocol import Storage
from kelpie.testing.redis_server import RedisServer
from tests.runtime.actors import BankAccount, KeyValueActor


def run(*argv: str, stdin: str = "", capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``kelpie argv...`` in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    old_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        code = main(list(argv))
    finally:
        sys.stdin = old_stdin
    out, err = capsys.readouterr()
    return code, out, err


def on(url: str, body: Callable[[Storage], Awaitable[Any]]) -> Any:
    """Run ``body(storage)`` on ``url`` in a loop of its own."""

    async def go() -> Any:
        storage = open_storage(url)
        try:
            return await body(storage)
        finally:
            await storage.close()

    return asyncio.run(go())


def populate(url: str, *, node_id: str | None = None, keep_active: bool = False) -> None:
    async def body(storage: Storage) -> None:
        runtime = Runtime(storage, node_id=node_id)
        runtime.register("account", BankAccount)
        runtime.register("kv", KeyValueActor)
        await runtime.invoke(ActorId("account", "alice"), "deposit", {"amount": 5, "txn": "t1"})
        await runtime.invoke(
            ActorId("account", "eu/bob"), "deposit", {"amount": 7}, idempotency_key="once"
        )
        await runtime.invoke(ActorId("kv", "k1"), "put", {"name": "x"})
        await storage.set(ActorId("raw/ns", "b\x00in"), b"\x00\xffkey", b"\x1b[31mred\x00")
        if not keep_active:
            await runtime.close()

    on(url, body)


@pytest.fixture
def lmdb_url(tmp_path: Path) -> str:
    return f"lmdb://{tmp_path / 'store'}"


def test_actors_lists_every_actor_as_a_table_and_as_json(
    lmdb_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(lmdb_url)
    code, out, err = run("actors", lmdb_url, capsys=capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "ID"]
    assert [line.split() for line in lines[1:4]] == [
        ["account", "alice"],
        ["account", "eu/bob"],
        ["kv", "k1"],
    ]
    assert lines[4].split()[0] == "raw/ns" and "\\u0000" in lines[4]  # escaped, printable
    assert lines[-1] == "4 actors"

    code, out, _ = run("actors", lmdb_url, "--json", capsys=capsys)
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"namespace": "account", "id": "alice"},
        {"namespace": "account", "id": "eu/bob"},
        {"namespace": "kv", "id": "k1"},
        {"namespace": "raw/ns", "id": "b\x00in"},
    ]
    code, out, _ = run("actors", lmdb_url, "--json", "--namespace", "account", capsys=capsys)
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["alice", "eu/bob"]
    code, out, _ = run("actors", lmdb_url, "--json", "--limit", "3", capsys=capsys)
    assert code == 0 and len(out.splitlines()) == 3
    code, out, _ = run("actors", lmdb_url, "--limit", "1", capsys=capsys)
    assert out.splitlines()[-1] == "1 actor (--limit reached)"


def test_bad_urls_ids_and_unreachable_servers_fail_with_one_line(
    lmdb_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run("actors", "nosuch://x", capsys=capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unknown storage scheme 'nosuch'" in err
    code, _, err = run("show", lmdb_url, "no-slash", capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "NAMESPACE/ID" in err
    code, _, err = run("show", lmdb_url, "/id", capsys=capsys)
    assert code == 2 and err.count("\n") == 1
    code, _, err = run("show", lmdb_url, '{"namespace": 1}', capsys=capsys)
    assert code == 2 and err.count("\n") == 1
    code, _, err = run("actors", lmdb_url, "--limit", "0", capsys=capsys)
    assert code == 2 and err.count("\n") == 1
    # A server nobody listens on, with a password in the URL: one line, no password.
    closed = "redis://user:s3cret-pw@127.0.0.1:1/0"
    for argv in (("actors", closed), ("show", closed, "a/b"), ("delete", closed, "a/b", "--yes")):
        code, out, err = run(*argv, capsys=capsys)
        assert code == 1, err
        assert err.count("\n") == 1 and "s3cret-pw" not in out + err, err
        assert "StorageUnavailableError" in err


def test_show_prints_state_seq_lease_idempotency_and_keys(
    lmdb_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(lmdb_url)
    code, out, err = run("show", lmdb_url, "account/eu/bob", capsys=capsys)  # id "eu/bob"
    assert code == 0, err
    fields = {line[:12].strip(): line[13:] for line in out.splitlines() if line[:1] != " "}
    assert fields["actor"] == "account/eu/bob"
    assert fields["seq"] == "1"
    assert json.loads(fields["state"]) == {"balance": 7, "history": [], "last_txn": ""}
    assert fields["lease"] == "none"
    assert fields["idempotency"].startswith("1 records kept")
    assert fields["kv keys"] == "1"
    assert out.splitlines()[-1].split() == ["balance", "1", "B"]

    code, out, _ = run("show", lmdb_url, "account/eu/bob", "--json", "--values", capsys=capsys)
    document = json.loads(out)
    assert (document["namespace"], document["id"], document["seq"]) == ("account", "eu/bob", 1)
    assert document["state_record"]["state"]["balance"] == 7
    assert document["idempotency_records"] == 1
    assert document["kv"] == [
        {"key": {"text": "balance", "hex": b"balance".hex()}, "size": 1,
         "value": {"text": "7", "hex": b"7".hex()}}
    ]  # fmt: skip


def test_show_prints_binary_and_foreign_records_safely(
    lmdb_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(lmdb_url)
    actor = '{"namespace": "raw/ns", "id": "b\\u0000in"}'  # JSON: the namespace has a "/"
    code, out, err = run("show", lmdb_url, actor, "--values", capsys=capsys)
    assert code == 0, err
    assert "\x1b" not in out and "\x00" not in out  # nothing reaches the terminal raw
    assert "(no state record" in out
    assert "[other] b'\\x00\\xffkey'" in out and "'\\x1b[31mred\\x00'" in out
    code, out, _ = run("show", lmdb_url, actor, "--json", "--values", capsys=capsys)
    other = json.loads(out)["other_keys"]
    assert other[0]["key"] == {"text": None, "hex": "00ff6b6579"}
    assert bytes.fromhex(other[0]["value"]["hex"]) == b"\x1b[31mred\x00"
    # A state record that is not kelpie's: shown as bytes, not a crash.
    on(lmdb_url, lambda s: s.set(ActorId("bad", "state"), STATE_KEY, b"\x01garbage\x1b"))
    code, out, err = run("show", lmdb_url, "bad/state", capsys=capsys)
    assert code == 0, err
    assert "UNREADABLE" in out and "\x1b" not in out
    # An actor with no records: exit 1, one line.
    code, _, err = run("show", lmdb_url, "account/nobody", capsys=capsys)
    assert code == 1 and "has no records" in err and err.count("\n") == 1


def test_show_names_the_lease_owner_of_an_active_actor(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{redis_server.url}?prefix=cli-{uuid.uuid4().hex}"
    populate(url, node_id="node-7", keep_active=True)  # the runtime never deactivates
    code, out, err = run("show", url, "account/alice", capsys=capsys)
    assert code == 0, err
    assert "lease        node-7 (held until" in out
    code, out, _ = run("show", url, "account/alice", "--json", capsys=capsys)
    assert json.loads(out)["lease_owner"] == "node-7"
    # delete refuses a leased actor unless --force
    code, _, err = run("delete", url, "account/alice", "--yes", capsys=capsys)
    assert code == 1 and "leased by node 'node-7'" in err
    assert on(url, lambda s: s.list_keys(ActorId("account", "alice")))
    code, out, _ = run("delete", url, "account/alice", "--yes", "--force", capsys=capsys)
    assert code == 0 and out.startswith("deleted actor account/alice")
    assert on(url, lambda s: s.list_keys(ActorId("account", "alice"))) == []


def test_delete_asks_and_deletes_nothing_unless_the_answer_is_yes(
    lmdb_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(lmdb_url)
    bob = ActorId("account", "eu/bob")
    for answer in ("", "no\n", "n\n", "yess\n"):
        code, out, err = run("delete", lmdb_url, "account/eu/bob", stdin=answer, capsys=capsys)
        assert code == 1, (answer, err)
        assert "Delete actor account/eu/bob and its 4 records" in err and "not deleted" in err
        assert len(on(lmdb_url, lambda s: s.list_keys(bob))) == 4
    code, out, err = run("delete", lmdb_url, "account/eu/bob", stdin="yes\n", capsys=capsys)
    assert code == 0, err
    assert out == "deleted actor account/eu/bob (4 records)\n"
    assert on(lmdb_url, lambda s: s.list_keys(bob)) == []
    code, out, _ = run("actors", lmdb_url, "--json", capsys=capsys)
    assert '"eu/bob"' not in out
    # Deleting again: nothing to delete, still success; --yes needs no stdin.
    code, out, _ = run("delete", lmdb_url, "account/eu/bob", "--yes", capsys=capsys)
    assert code == 0 and "nothing to delete" in out
    code, out, _ = run("delete", lmdb_url, "kv/k1", "--yes", capsys=capsys)
    assert (
        code == 0 and on(lmdb_url, lambda s: s.get(ActorId("kv", "k1"), user_key(b"name"))) is None
    )


def test_kelpie_bench_leaves_no_key_of_its_actors_in_a_real_redis(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import redis

    prefix = f"bench-{uuid.uuid4().hex}"
    url = f"{redis_server.url}?prefix={prefix}"
    argv = ("bench", "--storage", url, "--concurrency", "1,4", "--seconds", "0.3", "--quiet")
    code, out, err = run(*argv, capsys=capsys)
    assert "deleted every key the bench wrote" in out
    assert code == 0, err
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        keys = sorted(client.scan_iter(match=f"{prefix}*", count=1000))
    finally:
        client.close()
    # Only the store-wide keys (format marker, delete counter) under the "{#}" tag.
    assert [key for key in keys if not key.startswith(f"{prefix}:{{#}}:".encode())] == []


class _OldBackend:
    """A third-party backend written before list_actors/delete_actor: the old protocol only."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner

    async def get(self, actor: ActorId, key: bytes) -> bytes | None:
        return await self._inner.get(actor, key)

    async def set(self, actor: ActorId, key: bytes, value: bytes) -> None:
        await self._inner.set(actor, key, value)

    async def delete(self, actor: ActorId, key: bytes) -> None:
        await self._inner.delete(actor, key)

    async def list_keys(self, actor: ActorId, prefix: bytes = b"") -> list[bytes]:
        return await self._inner.list_keys(actor, prefix)

    def transaction(self, actor: ActorId) -> Any:
        return self._inner.transaction(actor)

    async def close(self) -> None:
        await self._inner.close()


def test_a_backend_without_the_lifecycle_methods_is_named_and_show_still_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kelpie.storage import register_scheme

    def factory(url: str, **options: Any) -> Any:  # not a Storage: it predates two methods
        return _OldBackend(open_storage(f"lmdb://{tmp_path / 'old'}"))

    register_scheme("oldstyle", factory)
    populate("oldstyle://x")
    code, out, err = run("show", "oldstyle://x", "account/alice", capsys=capsys)
    assert code == 0, err
    assert '"balance": 5' in out
    for argv in (
        ("actors", "oldstyle://x"),
        ("delete", "oldstyle://x", "account/alice", "--yes"),
        ("copy", "oldstyle://x", f"sqlite://{tmp_path / 'd.db'}"),
        ("copy", f"sqlite://{tmp_path / 'd.db'}", "oldstyle://x"),
    ):
        code, out, err = run(*argv, capsys=capsys)
        assert code == 1, (argv, err)
        assert err.count("\n") == 1 and "UnsupportedOperationError" in err
        assert "oldstyle backend does not implement" in err
        assert "list_actors()" in err or "delete_actor()" in err
    assert on(f"lmdb://{tmp_path / 'old'}", lambda s: s.list_keys(ActorId("account", "alice")))
