"""``kelpie demo``: the bank keeps its invariants under injected faults, across runs,
and its checker catches an inconsistency when one is planted."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest

from kelpie import ActorId, open_storage
from kelpie.cli import main
from kelpie.demo.bank import account_id
from kelpie.demo.check import Audit, check
from kelpie.demo.client import BankClient, GaveUpError
from kelpie.testing.redis_server import RedisServer

INVARIANTS = (
    "KV balance equals state balance",
    "every acknowledged op applied exactly once",
    "money conserved",
    "every transfer's two legs match",
)

_names = itertools.count()


def _memory_url() -> str:
    return f"memory://test-demo-{next(_names)}"


def _verdicts(out: str) -> dict[str, str]:
    """Each invariant's PASS/FAIL as printed in the demo's table."""
    verdicts = {}
    for line in out.splitlines():
        for name in INVARIANTS:
            if line.strip().startswith(name):
                verdicts[name] = line.split()[len(name.split())]
    assert set(verdicts) == set(INVARIANTS), out
    return verdicts


def _demo(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["demo", *args])
    out = capsys.readouterr().out
    print(out)  # shown when a test fails, with the seed
    return code, out


def test_demo_keeps_its_invariants_on_memory_under_faults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = _memory_url()
    code, out = _demo(capsys, "--storage", url, "--operations", "300", "--fault-rate", "0.2")
    assert code == 0
    assert set(_verdicts(out).values()) == {"PASS"}
    assert "300 ops over 1 run" in out
    assert "all invariants hold" in out
    faults = next(line for line in out.splitlines() if "faults injected" in line)
    assert int(faults.split()[2].replace(",", "")) > 0, "no fault fired"


def test_second_run_on_lmdb_continues_and_checks_the_old_data_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"lmdb://{tmp_path}/bank"
    first, out = _demo(capsys, "--storage", url, "--operations", "200", "--seed", "11")
    assert first == 0
    assert set(_verdicts(out).values()) == {"PASS"}
    assert "run 1" in out
    second, out = _demo(
        capsys, "--storage", url, "--operations", "150", "--accounts", "12", "--seed", "11"
    )
    assert second == 0
    assert set(_verdicts(out).values()) == {"PASS"}
    assert "run 2" in out
    assert "350 ops over 2 runs" in out
    assert "12 accounts" in out


def test_demo_keeps_its_invariants_on_redis(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path) as server:
        for run in (1, 2):
            code, out = _demo(capsys, "--storage", server.url, "--operations", "150")
            assert code == 0
            assert set(_verdicts(out).values()) == {"PASS"}
            assert f"{150 * run} ops over {run} run" in out


def test_without_storage_flag_the_demo_uses_the_configured_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _memory_url()
    monkeypatch.setenv("KELPIE_STORAGE_URL", url)
    code, out = _demo(capsys, "--operations", "50")
    assert code == 0
    assert out.startswith(f"kelpie demo on {url}:")


def test_the_header_never_shows_a_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path, password="s3cret-pw") as server:
        code, out = _demo(capsys, "--storage", server.url, "--operations", "20")
        assert code == 0
    assert "s3cret-pw" not in out
    assert ":***@" in out


def test_a_check_only_run_fails_on_a_planted_kv_balance(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = _memory_url()
    code, _ = _demo(capsys, "--storage", url, "--operations", "100", "--fault-rate", "0")
    assert code == 0

    async def plant() -> None:
        storage = open_storage(url)
        # b"u" + key is where an actor's own KV key lives (kelpie/actor/keys.py).
        await storage.set(account_id(3), b"ubalance", b"999999")
        await storage.close()

    asyncio.run(plant())
    code, out = _demo(capsys, "--storage", url, "--operations", "0")
    assert code == 1
    verdicts = _verdicts(out)
    assert verdicts["KV balance equals state balance"] == "FAIL"
    assert "acct-0003: KV 999999" in out
    assert "INVARIANTS VIOLATED" in out


def test_retries_without_idempotency_keys_are_caught_applying_twice(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checker must see what the idempotency keys prevent: a commit that landed
    # but whose reply was lost, retried under no key, applies the operation twice.
    keyed = BankClient.invoke

    async def keyless(
        self: BankClient, actor: ActorId, operation: str, payload: Any, key: str | None
    ) -> Any:
        return await keyed(self, actor, operation, payload, None)

    monkeypatch.setattr(BankClient, "invoke", keyless)
    url = _memory_url()
    code, out = _demo(capsys, "--storage", url, "--operations", "300", "--fault-rate", "0.3")
    assert code == 1
    assert _verdicts(out)["every acknowledged op applied exactly once"] == "FAIL"


def test_next_run_completes_a_transfer_an_interrupted_run_left_half_done(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keyed = BankClient.invoke

    async def no_deposit_legs(
        self: BankClient, actor: ActorId, operation: str, payload: Any, key: str | None
    ) -> Any:
        if operation == "deposit" and payload["peer"] is not None:
            raise GaveUpError("simulated: the client stopped between a transfer's two legs")
        return await keyed(self, actor, operation, payload, key)

    url = _memory_url()
    with monkeypatch.context() as patch:
        patch.setattr(BankClient, "invoke", no_deposit_legs)
        code, out = _demo(capsys, "--storage", url, "--operations", "200", "--seed", "5")
    assert code == 1
    verdicts = _verdicts(out)
    assert verdicts["every transfer's two legs match"] == "FAIL"
    assert verdicts["money conserved"] == "FAIL"
    assert "run incomplete" in out

    code, out = _demo(capsys, "--storage", url, "--operations", "100", "--seed", "5")
    assert code == 0
    assert "transfer(s) an earlier run left half-done" in out
    assert set(_verdicts(out).values()) == {"PASS"}


def _account(ops: dict[str, dict[str, Any]]) -> dict[str, Any]:
    balance = sum(op["amount"] for op in ops.values())
    return {"balance": balance, "applied": len(ops), "kv_balance": str(balance), "ops": ops}


def test_checker_fails_a_transfer_whose_deposit_leg_is_missing() -> None:
    ledger: dict[str, Any] = {
        "runs": 1,
        "accounts": 2,
        "finished": 1,
        "finished_runs": [1],
        "abandoned": ["r000001-000001"],  # the client gave up on the transfer
        "acknowledged": 1,
        "deposited": 50,
        "withdrawn": 0,
        "acks": [["r000001-000000", "d", 0, None, 50, True]],
    }
    funded = {"r000001-000000": {"amount": 50, "peer": None, "ok": True}}
    half_transfer = {"r000001-000001": {"amount": -20, "peer": 1, "ok": True}}
    found = Audit(ledger, [_account(funded | half_transfer), _account({})])
    verdicts = {inv.name: inv.passed for inv in check(found)}
    assert verdicts == {
        "KV balance equals state balance": True,
        "every acknowledged op applied exactly once": True,
        "money conserved": False,
        "every transfer's two legs match": False,
    }
    complete = Audit(
        ledger
        | {"abandoned": [], "acks": [*ledger["acks"], ["r000001-000001", "t", 0, 1, 20, True]]},
        [
            _account(funded | half_transfer),
            _account({"r000001-000001": {"amount": 20, "peer": 0, "ok": True}}),
        ],
    )
    assert all(inv.passed for inv in check(complete))


@pytest.mark.parametrize(
    "args",
    [
        ["--accounts", "0"],
        ["--operations", "-1"],
        ["--fault-rate", "1.5"],
        ["--storage", "nope://"],
    ],
)
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert main(["demo", *args]) == 2
    assert "kelpie demo:" in capsys.readouterr().err
