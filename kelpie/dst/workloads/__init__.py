"""Built-in workloads.

``ledger`` (deposits, withdrawals, transfers), ``registers`` (writes, torn-read
peeks, read-own-writes, deletes, lists, failing handlers, replays), ``mixed``
(both in one run) and ``bank`` (the seed scenario).
"""

from __future__ import annotations

from collections.abc import Callable

from kelpie.dst.harness import Workload
from kelpie.dst.workloads.bank import BankWorkload
from kelpie.dst.workloads.ledger import LedgerWorkload
from kelpie.dst.workloads.mixed import MixedWorkload
from kelpie.dst.workloads.registers import RegistersWorkload
from kelpie.dst.workloads.transfers import TransfersWorkload

__all__ = [
    "WORKLOADS",
    "BankWorkload",
    "LedgerWorkload",
    "MixedWorkload",
    "RegistersWorkload",
    "TransfersWorkload",
]

WORKLOADS: dict[str, Callable[[], Workload]] = {
    "ledger": LedgerWorkload,
    "bank": BankWorkload,
    "registers": RegistersWorkload,
    "mixed": MixedWorkload,
    "transfers": TransfersWorkload,
}
