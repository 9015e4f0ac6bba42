"""What the real-fault runs share: a server killer thread and how an attempt ended."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable
from typing import Protocol

from kelpie.errors import CommitOutcomeUnknownError, KelpieError, StorageUnavailableError

__all__ = ["Killable", "ServerKiller", "outcome_of"]


class Killable(Protocol):
    def kill(self) -> None: ...

    def start(self) -> None: ...


class ServerKiller:
    """SIGKILLs ``server`` ``times`` times at random moments and restarts it, in a thread.

    Each round waits ``up`` seconds (drawn uniformly) with the server running,
    kills it, waits ``down`` seconds, and starts it again. ``error`` holds what
    stopped the thread early; the caller reports it.
    """

    def __init__(
        self,
        server: Killable,
        times: int,
        rng: random.Random,
        *,
        up: tuple[float, float],
        down: tuple[float, float],
    ) -> None:
        self.server, self.times, self.rng = server, times, rng
        self.up, self.down = up, down
        self.done = threading.Event()
        self.restarts = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            for _ in range(self.times):
                time.sleep(self.rng.uniform(*self.up))
                self.server.kill()
                time.sleep(self.rng.uniform(*self.down))
                self.server.start()
                self.restarts += 1
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.done.set()

    def join(self) -> None:
        self._thread.join()


async def outcome_of(attempt: Awaitable[None], hang_guard: float) -> str:
    """Await ``attempt`` for at most ``hang_guard`` seconds; how it ended.

    ``ok``, ``unknown`` (CommitOutcomeUnknownError), ``unavailable``
    (StorageUnavailableError), another KelpieError's class name, or ``hang``.
    """
    try:
        async with asyncio.timeout(hang_guard):
            await attempt
    except CommitOutcomeUnknownError:
        return "unknown"
    except StorageUnavailableError:
        return "unavailable"
    except KelpieError as exc:
        return type(exc).__name__
    except TimeoutError:
        return "hang"
    return "ok"
