"""Invocations/s and latency through the runtime per backend, beside the raw client.

    python benchmarks/bench.py [--storage URL ...] [--concurrency 1,8,64] [--seconds S]
                               [--keys 1] [--compare-off] [--slices 3]

The same measurements as ``kelpie bench`` (this script is a thin wrapper over
``kelpie.bench``). One figure runs N concurrent actors (N = concurrency), each
invoking a handler through a real ``kelpie.Runtime`` in a loop for S seconds;
every invocation changes the actor's state and writes K KV keys, and commits
as one transaction. Beside it, in the same process and in alternating slices,
the raw baseline does the same writes per invocation with the backend's own
client and no kelpie: a dict (memory), a py-lmdb write transaction on a
worker thread (LMDB, same ``sync``), ``WATCH``/``HGET`` + ``MULTI``/``HSET``/
``EXEC`` with redis.asyncio (Redis). Columns: inv/s, p50 and p99 latency (ms),
raw/s, raw p99, ratio = kelpie/raw, and the mean group-commit batch where the
storage reports it.

Without ``--storage``: memory://, LMDB in a temporary directory (sync on) and
Redis on a private ``redis-server`` (if on PATH), in both commit modes (the
check-and-set script and ``?commit=multi``). With ``--storage URL``: that
store, in its own actor namespace ``bench-<random token>``, every key deleted
at the end. ``--compare-off`` also measures ``group_commit=False``;
``--keys 1,100`` prints the cost of 100 keys per invocation against 1 (issue
6 target on Redis: at most 3x). See docs/performance.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kelpie.bench import main

if __name__ == "__main__":
    sys.exit(main())
