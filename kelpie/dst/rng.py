"""Seeded randomness: one seed, many independent named streams.

Every subsystem of a simulation (the workload, the fault injector, the crash
scheduler, ...) draws from its own stream, so adding a draw in one never shifts
the numbers another sees. A stream's state is derived by hashing the seed and
the stream's name with SHA-256, so seed N and seed N+1 share no stream (unlike
``Random(seed + k)``, where seed N's stream k+1 is seed N+1's stream k).
"""

from __future__ import annotations

import hashlib
import random

__all__ = ["SimRandom", "derive_seed", "stream"]


def derive_seed(seed: int, name: str) -> int:
    """A 256-bit integer derived from ``seed`` and ``name`` by SHA-256."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    material = f"kelpie-dst\x00{seed}\x00{name}".encode()
    return int.from_bytes(hashlib.sha256(material).digest(), "big")


def stream(seed: int, name: str) -> random.Random:
    """A fresh ``random.Random`` for stream ``name`` of ``seed``."""
    return random.Random(derive_seed(seed, name))


class SimRandom:
    """The root of a simulation's randomness: hands out named streams of one seed.

    Asking twice for the same name returns the same (shared) generator, so a
    subsystem keeps drawing where it left off; ``fork(name)`` gives a child
    root whose streams are again independent of every other.
    """

    def __init__(self, seed: int, *, path: str = "") -> None:
        derive_seed(seed, path)  # validates seed
        self.seed = seed
        self._path = path
        self._streams: dict[str, random.Random] = {}

    def __repr__(self) -> str:
        return f"SimRandom(seed={self.seed}, path={self._path!r})"

    def stream(self, name: str) -> random.Random:
        """The generator of stream ``name`` (created on first use)."""
        full = f"{self._path}/{name}"
        rng = self._streams.get(full)
        if rng is None:
            rng = self._streams[full] = stream(self.seed, full)
        return rng

    def fork(self, name: str) -> SimRandom:
        """A child root: its streams are named under ``name``."""
        return SimRandom(self.seed, path=f"{self._path}/{name}")
