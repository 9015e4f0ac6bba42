"""The planted bugs of ``python -m kelpie.dst.mutants``: one small textual change each.

Each ``Mutant`` names a file of the ``kelpie`` package, a piece of its text
that must occur there exactly once, what replaces it, and the bug that makes.
Every one is a change a developer could plausibly make (an off-by-one, a
dropped line, a condition too weak, a misrouted result), and every one breaks
a guarantee the runtime or the storage contract gives. When the code moves
and an original text no longer occurs exactly once, the mutation script and
``tests/dst/test_mutants.py`` fail and name the mutant: update it here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MUTANTS", "Mutant"]


@dataclass(frozen=True)
class Mutant:
    """One planted bug: replace ``original`` (exactly once in ``file``) by ``replacement``."""

    name: str
    file: str
    """Path inside the ``kelpie`` package, e.g. ``runtime/activation.py``."""
    original: str
    replacement: str
    description: str
    area: str
    """What it breaks, for the table: runtime, storage, memory, batcher, context."""
    workload: str | None = None
    """The ``kelpie dst`` workload whose storm catches it (``None``: the storm's own)."""


MUTANTS: tuple[Mutant, ...] = (
    # -- the runtime: activation commit path, fence, rollback, idempotency ----------
    Mutant(
        "fence_trusts_cache",
        "runtime/activation.py",
        "if raw != loaded.record:",
        "if (raw is None) != (loaded.record is None):",
        "the fence takes any stored record for the one this activation loaded "
        "(a commit elsewhere since the load goes unnoticed)",
        "runtime",
    ),
    Mutant(
        "seq_not_advanced",
        "runtime/activation.py",
        "            loaded.seq + 1,\n            count,\n            new_owner,\n",
        "            loaded.seq,\n            count,\n            new_owner,\n",
        "after a commit the activation remembers the old seq, so its next commit "
        "writes the same seq again (the fence cannot tell two versions apart)",
        "runtime",
    ),
    Mutant(
        "no_rollback_on_error",
        "runtime/activation.py",
        "            else:\n                self._restore(loaded)\n",
        "",
        "memory is not rolled back when a handler raises or times out: the next "
        "commit stores the failed invocation's changes",
        "runtime",
    ),
    Mutant(
        "result_in_slot",
        "runtime/activation.py",
        "await txn.set(record_key, idempotency.pack(result_bytes))",
        "await txn.set(slot, idempotency.pack(result_bytes))",
        "the idempotency result is written to the ring slot instead of the key's "
        "record, so a retry finds no record and runs again",
        "runtime",
    ),
    Mutant(
        "idempotency_count_frozen",
        "runtime/activation.py",
        "                count += 1\n",
        "",
        "the idempotency ring never advances: every key evicts the previous one (a window of one)",
        "runtime",
    ),
    Mutant(
        "read_only_aborted",
        "runtime/activation.py",
        "                if ctx.read:\n",
        "                if ctx.wrote:\n",
        "an invocation that only read is aborted, not committed, so its KV reads "
        "are never validated (issue 13, bug 2, in the runtime)",
        "runtime",
    ),
    Mutant(
        "handover_waits_for_exited_only",
        "runtime/runtime.py",
        "after = previous.task if previous is not None else self._exiting.get(actor_id)",
        "after = self._exiting.get(actor_id)",
        "a new mailbox waits only for an old worker that already left the map, not for "
        "a stopping one still draining its queue (issue 13, bug 1)",
        "runtime",
    ),
    Mutant(
        "lease_expiry_ignores_renewals",
        "runtime/lease.py",
        "if seen is None or seen[0] != owner or seen[1] != seq:",
        "if seen is None or seen[0] != owner:",
        "a lease counts as expired lease_seconds after it was first seen, even if "
        "its owner kept renewing it",
        "runtime",
    ),
    # -- the generic storage layer (BufferedTransaction) ------------------------------
    Mutant(
        "ryw_ignores_buffered_delete",
        "storage/base.py",
        "        if key in self._writes:\n            return self._writes[key]\n",
        "        if self._writes.get(key) is not None:\n            return self._writes[key]\n",
        "get() inside a transaction reads the stored value of a key the "
        "transaction deleted (read-your-writes broken for deletes)",
        "storage",
    ),
    Mutant(
        "list_keys_shows_buffered_deletes",
        "storage/base.py",
        "                if value is None:\n                    keys.discard(key)\n"
        "                else:\n                    keys.add(key)\n",
        "                keys.add(key)\n",
        "list_keys() inside a transaction lists keys the transaction deleted",
        "storage",
    ),
    Mutant(
        "read_only_commit_unchecked",
        "storage/base.py",
        "            else:\n                await self._validate()\n",
        "",
        "commit() of a transaction that only read checks nothing (issue 13, bug 2, "
        "in the storage layer)",
        "storage",
    ),
    # -- the memory backend -----------------------------------------------------------
    Mutant(
        "memory_version_check_weak",
        "storage/memory.py",
        "if read_version is not None and read_version != records.version:",
        "if read_version is not None and read_version > records.version:",
        "the memory backend's version check only rejects a version from the "
        "future, never a commit that landed since the read",
        "memory",
    ),
    Mutant(
        "memory_read_version_refreshed",
        "storage/memory.py",
        "        if self._read_version is None:\n            self._read_version",
        "        if True:\n            self._read_version",
        "a memory transaction's conflict window starts at its last read, not its "
        "first (commits between the two are missed)",
        "memory",
    ),
    Mutant(
        "memory_delete_stays_listed",
        "storage/memory.py",
        "                    else:\n                        self.removed.add(key)\n",
        "",
        "a deleted key that an earlier listing had seen is not noted as removed: "
        "later listings still return it",
        "memory",
    ),
    Mutant(
        "memory_prefix_scan_short",
        "storage/memory.py",
        "while end < len(keys) and keys[end].startswith(prefix):",
        "while end < len(keys) - 1 and keys[end].startswith(prefix):",
        "a prefix listing stops one short of the end of the key index",
        "memory",
    ),
    # -- the group-commit batcher -----------------------------------------------------
    Mutant(
        "batcher_leader_drops_error",
        "storage/group_commit.py",
        "        if isinstance(outcome, BaseException):\n            raise outcome\n",
        "",
        "a commit written alone by its leader returns its failure (e.g. a "
        "version conflict) as if it succeeded",
        "batcher",
    ),
    Mutant(
        "batcher_drain_drops_error",
        "storage/group_commit.py",
        "                    if isinstance(outcome, BaseException):\n"
        "                        future.set_exception(outcome)\n"
        "                    else:\n"
        "                        future.set_result(outcome)\n",
        "                    future.set_result(outcome)  # type: ignore[arg-type]\n",
        "a commit of a batch of several is told its failure (e.g. a version "
        "conflict) as a result: it returns as if it succeeded",
        "batcher",
    ),
    Mutant(
        "batcher_failure_reported_ok",
        "storage/group_commit.py",
        "outcomes = [exc] * len(batch)",
        "outcomes = [None] * len(batch)",
        "when writing a whole batch fails, every commit in it is told it succeeded",
        "batcher",
    ),
    Mutant(
        "batcher_strands_one",
        "storage/group_commit.py",
        "            if self._queue:\n                self._start_drain()",
        "            if len(self._queue) > 1:\n                self._start_drain()",
        "a single commit queued behind a leader is never drained (it waits for company)",
        "batcher",
    ),
    # -- the actor context ------------------------------------------------------------
    Mutant(
        "kv_delete_not_a_write",
        "actor/context.py",
        "        await self._txn.delete(user_key(key))\n        self.wrote = True\n",
        "        await self._txn.delete(user_key(key))\n",
        "kv_delete does not mark the invocation as a writer: a handler that only "
        "deletes is aborted, not committed",
        "context",
    ),
    # -- messaging (issue 16): caught by the transfers workload ------------------------
    Mutant(
        "send_before_commit",
        "messaging/delivery.py",
        "        return StagedSends(sender, state, stored, deleted, added, counters, sends)\n",
        "        self.enqueue(sender, sends)\n"
        "        return StagedSends(sender, state, stored, deleted, added, counters, [])\n",
        "messages are handed to delivery while the sender's commit is still pending: a "
        "commit that fails (or a retry that numbers the message again) still delivers it",
        "messaging",
        workload="transfers",
    ),
    Mutant(
        "no_dedup_at_target",
        "messaging/calls.py",
        "    if message.seq <= mark:\n        return None\n",
        "",
        "the target applies a message again when it is delivered again (no high-water "
        "check): a redelivery after a lost ack or an unknown outcome doubles the credit",
        "messaging",
        workload="transfers",
    ),
    Mutant(
        "no_dedup_when_riding",
        "messaging/calls.py",
        "        if seq <= mark:\n            continue  # applied already\n",
        "",
        "a message that rides a user's call (the common path, ADR 0020) is applied without "
        "its high-water check: one handed over again after a crash or a lost outcome doubles",
        "messaging",
        workload="transfers",
    ),
    Mutant(
        "riding_mark_not_written",
        "messaging/calls.py",
        "    writes[records.high_water_key(sender_tag)] = records.seq_bytes(seq)\n",
        "    pass\n",
        "a message applied through a buffering transaction (kelpie's own backends) advances "
        "the mark only in the activation's memory, not in the store: after a crash or a "
        "reload it is applied again",
        "messaging",
        workload="transfers",
    ),
    Mutant(
        "outbox_entry_not_buffered",
        "messaging/delivery.py",
        "            if writes is not None and len(value) <= MAX_VALUE_BYTES:\n"
        "                writes[key] = value\n",
        "            if writes is not None and len(value) <= MAX_VALUE_BYTES:\n"
        "                pass\n",
        "a message sent through a buffering transaction (kelpie's own backends) is handed to "
        "delivery but never stored in the sender's outbox: a crash before it lands loses it",
        "messaging",
        workload="transfers",
    ),
    Mutant(
        "combined_failure_settles",
        "runtime/mailbox.py",
        "        await inbox.deliver_alone(activation, batch)\n        if retryable:\n",
        "        for arrival in batch:\n            arrival.settle()\n        if retryable:\n",
        "when a user's call that carried messages fails, its messages are reported applied "
        "instead of being delivered again alone: their senders drop them, the credit is lost",
        "messaging",
        workload="transfers",
    ),
    Mutant(
        "marks_known_before_commit",
        "messaging/calls.py",
        "    ctx._new_marks[sender_tag] = mark\n",
        "    ctx._marks[sender_tag] = mark\n",
        "a high-water mark read or written in a transaction is remembered by the activation "
        "even if that transaction fails: a redelivery looks applied, the credit is lost",
        "messaging",
        workload="transfers",
    ),
)
