"""A runtime process that moves money by messages, for the SIGKILL runs of ``transfer_kills``.

Run ``python -m kelpie.testing.transfer_node URL --tag T [options]``. The
process opens the store, runs one ``Runtime`` (no node id: several such
processes share one store, fenced by the actors' version checks; with
``--lease-seconds`` it is node ``--tag`` and takes actors' leases) with the
transfers workload's ``TransferAccount`` (namespace ``xfer``: ``debit`` ->
``ctx.send(credit)``, ``open_interest`` -> a one-shot reminder) and a
``Clock`` (namespace ``clock``: repeating or one-shot reminders that record
which due time fired, on which process). It sets the ``--set-clock``
reminders, prints ``READY`` and runs ``--clients`` clients that transfer
between ``--accounts`` accounts until it is killed (or ``--ops`` steps are
done). ``--quiesce SECONDS`` instead waits, clients done, until no account
holds an outbox entry or a reminder and exits.

Every line on stdout is one event, written (and flushed) before the client
moves on, so what a SIGKILLed process said survives it:
``I id source target amount`` before a debit is invoked, ``M id account
after`` before a reminder is opened, ``A id`` once acknowledged, ``R id``
once rejected (insufficient funds), ``U id outcome`` when the client gave it
up in doubt. ``READY`` ends the start-up; ``--quiesce`` ends with one JSON line.

Test-harness code: it may use the wall clock and its own seeded ``random``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kelpie.actor.actor import Actor
from kelpie.actor.context import ActorContext
from kelpie.dst.workloads.transfers import NAMESPACE, InsufficientFundsError, TransferAccount
from kelpie.identity import ActorId
from kelpie.messaging import calls, records
from kelpie.messaging.reminders import Reminder
from kelpie.reliability.faults import outcome_of
from kelpie.runtime import Runtime
from kelpie.storage.protocol import Storage
from kelpie.storage.registry import open_storage

__all__ = ["CLOCK", "Clock", "ClockState", "account", "main", "pending"]

CLOCK = ActorId("clock", "c0")
_GUARD = 30.0  # an invocation that takes longer is given up (``hang``)
_PERSIST = 10.0  # a client retries an operation (same idempotency key) this long
_NODE = {"tag": "?"}  # this process's --tag, recorded by every Clock fire


def account(number: int) -> ActorId:
    return ActorId(NAMESPACE, f"acct{number}")


@dataclass
class ClockState:
    fired: list[list[Any]] = field(default_factory=list)
    """``[name, due, tag]`` per fire, in commit order: the due time the record named."""


class Clock(Actor[ClockState]):
    """Reminders whose fires say which due time they were for and which process ran them."""

    state_type = ClockState

    async def set(self, ctx: ActorContext[ClockState], payload: dict[str, Any]) -> None:
        ctx.set_reminder(
            payload["name"],
            after=payload["after"],
            operation="tick",
            payload=payload["name"],
            every=payload.get("every"),
        )

    async def tick(self, ctx: ActorContext[ClockState], payload: str) -> None:
        # The fire runs in the transaction that read the record; its due time is the
        # one this fire is for (the record advances only when this commit lands).
        raw = await calls.txn_of(ctx).get(records.reminder_key(payload))
        due = None if raw is None else Reminder.unpack(payload, raw, ctx.actor_id).due
        ctx.state.fired.append([payload, due, _NODE["tag"]])


async def pending(storage: Storage, accounts: int) -> int:
    """Outbox entries and reminders the accounts still hold."""
    left = 0
    for number in range(accounts):
        left += len(await storage.list_keys(account(number), records.OUTBOX))
        left += len(await storage.list_keys(account(number), records.REMINDER))
    return left


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _invoke(runtime: Runtime, actor: ActorId, op: str, payload: Any, key: str) -> str:
    """Invoke, retried under one idempotency key; the last outcome (``ok``, ``rejected``…)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _PERSIST
    attempt = 0
    while True:
        try:
            outcome = await outcome_of(
                runtime.invoke(actor, op, payload, idempotency_key=key), _GUARD
            )
        except InsufficientFundsError:
            return "rejected"
        attempt += 1
        if outcome == "ok" or loop.time() > deadline:
            return outcome
        # Conflicts with the other processes, leases of a killed one not yet expired.
        await asyncio.sleep(min(0.1, 0.005 * attempt))


async def _client(runtime: Runtime, args: argparse.Namespace, number: int, seed: float) -> None:
    rng = random.Random(seed)
    step = 0
    while args.ops < 0 or step < args.ops:
        step += 1
        op_id = f"{args.tag}.{number}.{step}"
        source = account(rng.randrange(args.accounts))
        if rng.random() < args.reminders:
            after = round(rng.uniform(0.2, 1.5), 3)
            _say(f"M {op_id} {source.id} {after}")
            payload: dict[str, Any] = {"id": op_id, "after": after}
            outcome = await _invoke(runtime, source, "open_interest", payload, op_id)
        else:
            target = account(rng.randrange(args.accounts))  # sometimes the source itself
            amount = rng.randint(1, 50)
            _say(f"I {op_id} {source.id} {target.id} {amount}")
            payload = {"id": op_id, "to": target.id, "amount": amount}
            outcome = await _invoke(runtime, source, "debit", payload, op_id)
        if outcome == "ok":
            _say(f"A {op_id}")
        elif outcome == "rejected":
            _say(f"R {op_id}")
            await asyncio.sleep(0.02)  # let credits in flight land before the next try
        else:
            _say(f"U {op_id} {outcome}")


async def _quiesce(storage: Storage, accounts: int, within: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    left = first = await pending(storage, accounts)
    while left and loop.time() - start < within:
        await asyncio.sleep(0.1)
        left = await pending(storage, accounts)
    return {"found": first, "pending": left, "waited": round(loop.time() - start, 3)}


async def _run(args: argparse.Namespace) -> int:
    _NODE["tag"] = args.tag
    storage = open_storage(args.url)
    try:
        leases: dict[str, Any] = {}
        if args.lease_seconds is not None:
            leases = {"node_id": args.tag, "lease_seconds": args.lease_seconds}
        runtime = Runtime(storage, invocation_timeout=_GUARD, conflict_retries=5, **leases)
        async with runtime:
            runtime.register(NAMESPACE, TransferAccount)
            runtime.register(CLOCK.namespace, Clock)
            for spec in args.set_clock:
                name, after, *every = spec.split(":")
                payload = {"name": name, "after": float(after)}
                if every:
                    payload["every"] = float(every[0])
                outcome = await _invoke(runtime, CLOCK, "set", payload, f"clock-{name}")
                _say(f"C {name} {outcome}")
            _say("READY")
            rng = random.Random(args.seed)
            await asyncio.gather(
                *(_client(runtime, args, n, rng.random()) for n in range(args.clients))
            )
            if args.quiesce is not None:
                _say(json.dumps(await _quiesce(storage, args.accounts, args.quiesce)))
                return 0
            await asyncio.Event().wait()  # serve the sweep until killed
        return 0
    finally:
        await storage.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kelpie.testing.transfer_node", description=__doc__.split("\n")[0]
    )
    parser.add_argument("url", help="storage URL, e.g. lmdb:///tmp/xfer or redis://...")
    parser.add_argument("--tag", required=True, help="unique per process: prefixes every op id")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accounts", type=int, default=4)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--ops", type=int, default=-1, help="steps per client (-1: until killed)")
    parser.add_argument("--reminders", type=float, default=0.1, help="share of reminder steps")
    parser.add_argument("--set-clock", action="append", default=[], metavar="NAME:AFTER[:EVERY]")
    parser.add_argument(
        "--lease-seconds", type=float, default=None, help="run as node --tag with leases"
    )
    parser.add_argument("--quiesce", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
