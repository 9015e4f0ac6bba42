"""Seeds for simulation tests: ``KELPIE_DST_SEED=N`` replays one seed everywhere."""

from __future__ import annotations

import os


def dst_seeds(default: range | list[int]) -> list[int]:
    """``default``, or only ``$KELPIE_DST_SEED`` when it is set (to replay a failure)."""
    value = os.environ.get("KELPIE_DST_SEED")
    if value:
        return [int(value)]
    return list(default)
