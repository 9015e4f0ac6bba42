"""Every error kelpie raises, named after what the caller should do.

```
KelpieError
├── ConfigError (ValueError)
├── InvalidActorIdError (ValueError)
├── InvalidKeyError (ValueError)
├── ValueTooLargeError (ValueError)
├── StorageError
│   ├── StorageUnavailableError        transient: retry later
│   ├── StorageClosedError
│   ├── StorageFullError
│   ├── TransactionClosedError
│   ├── TransactionConflictError       retry the whole transaction
│   ├── CommitOutcomeUnknownError      reload before deciding
│   ├── UnsupportedOperationError      the backend lacks the method
│   └── CorruptStateError
│       └── StateVersionTooNewError    written by a newer state_version
├── SerializationError (TypeError)
├── UnknownActorTypeError
├── UnknownOperationError
├── InvocationTimeoutError
├── ActorActiveElsewhereError          .owner: the node id to route to
├── MailboxFullError                   the actor's queue is full: back off
├── IdempotencyKeyReusedError          the key already belongs to another call
├── ReentrantCallError                 a handler invoked its own actor
├── RuntimeClosedError
└── DestinationNotEmptyError           copy_store into a store that has actors
```

Backend-library exceptions (``redis.*``, ``lmdb.*``) never reach callers: each
backend translates them at its boundary and chains the original with ``from``.
"""

from __future__ import annotations

__all__ = [
    "ActorActiveElsewhereError",
    "CommitOutcomeUnknownError",
    "ConfigError",
    "CorruptStateError",
    "DestinationNotEmptyError",
    "IdempotencyKeyReusedError",
    "InvalidActorIdError",
    "InvalidKeyError",
    "InvocationTimeoutError",
    "KelpieError",
    "MailboxFullError",
    "ReentrantCallError",
    "RuntimeClosedError",
    "SerializationError",
    "StateVersionTooNewError",
    "StorageClosedError",
    "StorageError",
    "StorageFullError",
    "StorageUnavailableError",
    "TransactionClosedError",
    "TransactionConflictError",
    "UnknownActorTypeError",
    "UnknownOperationError",
    "UnsupportedOperationError",
    "ValueTooLargeError",
]


class KelpieError(Exception):
    """Base of every error kelpie raises."""


class ConfigError(KelpieError, ValueError):
    """A storage URL, option or config file is wrong; the message names it."""


class InvalidActorIdError(KelpieError, ValueError):
    """An ``ActorId`` part is empty, too long, or not a string."""


class InvalidKeyError(KelpieError, ValueError):
    """A key is empty or longer than the limit."""


class ValueTooLargeError(KelpieError, ValueError):
    """A value is larger than the limit."""


class StorageError(KelpieError):
    """A storage operation failed."""


class StorageUnavailableError(StorageError):
    """The backend cannot be reached right now; nothing was written. Retry later."""


class StorageClosedError(StorageError):
    """The storage was closed; open a new one."""


class StorageFullError(StorageError):
    """The backend is out of space; nothing of the failed commit was written."""


class TransactionClosedError(StorageError):
    """The transaction was already committed or aborted."""


class TransactionConflictError(StorageError):
    """Another commit on the same actor landed after this transaction read it.

    Nothing was written; retry the whole transaction (read again, then write).
    """


class CommitOutcomeUnknownError(StorageError):
    """The commit was sent but its reply was lost: it may or may not have landed.

    Reload before deciding; an idempotency key makes a retry safe.
    """


class UnsupportedOperationError(StorageError):
    """The backend does not implement a method the caller needs.

    Raised, naming the backend's scheme and the method, when a backend written
    against an older ``Storage`` protocol lacks e.g. ``list_actors`` or
    ``delete_actor``. Everything else still works on that backend.
    """


class CorruptStateError(StorageError):
    """Stored bytes cannot be decoded; the actor is not silently reset."""


class StateVersionTooNewError(CorruptStateError):
    """The stored state was written by a newer ``state_version`` than the running class.

    Nothing was stored: the record is never overwritten with fewer fields.
    Let a node running the newer class serve the actor.
    """


class SerializationError(KelpieError, TypeError):
    """State, a payload or a result cannot be encoded; nothing was stored."""


class UnknownActorTypeError(KelpieError):
    """No actor class is registered for the actor's namespace."""


class UnknownOperationError(KelpieError):
    """The actor class has no public handler of that name."""


class InvocationTimeoutError(KelpieError):
    """The handler ran past ``invocation_timeout``; nothing of it was stored."""


class ActorActiveElsewhereError(KelpieError):
    """Another live node holds the actor's lease; route the call to ``owner``."""

    def __init__(self, message: str, *, owner: str) -> None:
        super().__init__(message)
        self.owner = owner


class MailboxFullError(KelpieError):
    """The actor's mailbox is full; back off and retry."""


class IdempotencyKeyReusedError(KelpieError):
    """The idempotency key was already used on this actor for another operation or payload.

    Nothing was run or stored. Use a new key for a new call; reuse a key only
    to retry the very same call.
    """


class ReentrantCallError(KelpieError):
    """A handler awaited ``Runtime.invoke`` on its own actor, which would deadlock.

    Raised at once. Use ``ctx.send`` to talk to actors from a handler.
    """


class RuntimeClosedError(KelpieError):
    """The runtime was closed; no new invocations are accepted."""


class DestinationNotEmptyError(KelpieError):
    """``copy_store`` into a store that already holds actors, without ``merge`` or ``resume``.

    Nothing was copied.
    """
