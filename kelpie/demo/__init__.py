"""``kelpie demo``: a bank whose invariants survive injected storage faults.

Account actors (``bank``) take deposits and withdrawals; a transfer is a
withdrawal from one account and a deposit to another, each invoked with its own
idempotency key. A retrying client (``client``) drives them while faults are
injected at the storage boundary with ``kelpie.dst.faults.FaultyStorage``; the
checker (``check``) then reloads everything from storage and verifies that
every account's KV balance equals its state, that every acknowledged operation
was applied exactly once, and that money is conserved. A ledger actor keeps
what the checker needs, so a second run checks the old data as well.
"""

from kelpie.demo.command import add_arguments, run

__all__ = ["add_arguments", "run"]
