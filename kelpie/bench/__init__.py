"""``kelpie bench``: the runtime's throughput and latency beside the raw backend client.

A measurement runs N concurrent actors, each invoking a handler through a real
``Runtime`` in a loop for S seconds (every invocation changes the actor's
state and writes K KV keys), alternating slices with the raw baseline: the
same writes done with the backend's own client and no kelpie. The
``transfers`` workload (``kelpie.bench.transfers``) measures transfers between
actors (``ctx.send``) against plain invocations instead. See
docs/performance.md.
"""

from kelpie.bench.command import add_arguments, main, parse_options, run
from kelpie.bench.measure import BenchOptions, Target, bench_storage, new_namespace
from kelpie.bench.report import Row, format_header, format_row, summary_lines
from kelpie.bench.targets import default_targets, user_targets
from kelpie.bench.timing import Sample
from kelpie.bench.transfers import TransferRow, bench_transfers

__all__ = [
    "BenchOptions",
    "Row",
    "Sample",
    "Target",
    "TransferRow",
    "add_arguments",
    "bench_storage",
    "bench_transfers",
    "default_targets",
    "format_header",
    "format_row",
    "main",
    "new_namespace",
    "parse_options",
    "run",
    "summary_lines",
    "user_targets",
]
