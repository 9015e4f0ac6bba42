"""kelpie: virtual actors whose every invocation commits state and KV writes atomically."""

from kelpie.actor import ActorId
from kelpie.errors import (
    ActorActiveElsewhereError,
    CommitOutcomeUnknownError,
    ConfigError,
    CorruptStateError,
    InvalidActorIdError,
    InvalidKeyError,
    InvocationTimeoutError,
    KelpieError,
    MailboxFullError,
    RuntimeClosedError,
    SerializationError,
    StorageClosedError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
    TransactionClosedError,
    TransactionConflictError,
    UnknownActorTypeError,
    UnknownOperationError,
    ValueTooLargeError,
)
from kelpie.storage import Storage, StorageURL, Transaction, open_storage

__version__ = "0.1.0"

__all__ = [
    "ActorActiveElsewhereError",
    "ActorId",
    "CommitOutcomeUnknownError",
    "ConfigError",
    "CorruptStateError",
    "InvalidActorIdError",
    "InvalidKeyError",
    "InvocationTimeoutError",
    "KelpieError",
    "MailboxFullError",
    "RuntimeClosedError",
    "SerializationError",
    "Storage",
    "StorageClosedError",
    "StorageError",
    "StorageFullError",
    "StorageURL",
    "StorageUnavailableError",
    "Transaction",
    "TransactionClosedError",
    "TransactionConflictError",
    "UnknownActorTypeError",
    "UnknownOperationError",
    "ValueTooLargeError",
    "open_storage",
]
