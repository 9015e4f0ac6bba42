"""Transfers/s (debit + delivered credit) against plain invocations/s per backend (issue 16).

    python benchmarks/transfers.py [--storage URL ...] [--concurrency 1,8,64] [--seconds S]

The same measurement as ``kelpie bench --workload transfers`` (this script is
a thin wrapper over ``kelpie.bench``): a transfer is a ``debit`` invocation
whose commit carries a ``ctx.send(credit)``, counted once the credit has been
applied at the target; the baseline is plain invocations (one commit each) by
the same concurrent clients on the same accounts and backend, in alternating
slices. Target: ratio >= 0.4 (two commits plus delivery per transfer). See
docs/performance.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kelpie.bench import main

if __name__ == "__main__":
    sys.exit(main(["--workload", "transfers", *sys.argv[1:]]))
