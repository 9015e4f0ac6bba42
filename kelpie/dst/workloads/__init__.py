"""Built-in workloads: ``ledger`` (deposits, withdrawals, transfers) and ``bank``."""

from __future__ import annotations

from collections.abc import Callable

from kelpie.dst.harness import Workload
from kelpie.dst.workloads.bank import BankWorkload
from kelpie.dst.workloads.ledger import LedgerWorkload

__all__ = ["WORKLOADS", "BankWorkload", "LedgerWorkload"]

WORKLOADS: dict[str, Callable[[], Workload]] = {
    "ledger": LedgerWorkload,
    "bank": BankWorkload,
}
