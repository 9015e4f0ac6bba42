"""Which actor's handler is running: a self-invoke fails at once instead of deadlocking.

Each mailbox worker task runs with ``CURRENT`` set to its runtime and actor
(the task copies the context at creation, so the handler, its hooks and any
task it starts see it). ``Runtime.invoke`` refuses a call on the very actor
whose handler is calling it: that call would queue behind the running handler
and both would wait until ``InvocationTimeoutError``.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

from kelpie.errors import ReentrantCallError
from kelpie.identity import ActorId

if TYPE_CHECKING:
    from kelpie.runtime.runtime import Runtime

__all__ = ["CURRENT", "check_reentrant"]

CURRENT: contextvars.ContextVar[tuple[Runtime, ActorId] | None] = contextvars.ContextVar(
    "kelpie_current_actor", default=None
)
"""(runtime, actor) of the mailbox worker this code runs in; ``None`` outside any."""


def check_reentrant(runtime: Runtime, actor_id: ActorId) -> None:
    """Raise ``ReentrantCallError`` if ``actor_id``'s own handler (on ``runtime``) is calling."""
    current = CURRENT.get()
    if current is not None and current[0] is runtime and current[1] == actor_id:
        raise ReentrantCallError(
            f"a handler of actor {actor_id} invoked its own actor through the runtime; "
            "that call would wait for the handler itself (use ctx.send to message "
            "yourself after this invocation commits)"
        )
