"""kelpie: virtual actors whose every invocation commits state and KV writes atomically."""

from kelpie.actor import Actor, ActorContext, ActorId, JsonCodec, StateCodec
from kelpie.errors import (
    ActorActiveElsewhereError,
    CommitOutcomeUnknownError,
    ConfigError,
    CorruptStateError,
    IdempotencyKeyReusedError,
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
from kelpie.runtime import Runtime
from kelpie.storage import Storage, StorageURL, Transaction, open_storage

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "ActorActiveElsewhereError",
    "ActorContext",
    "ActorId",
    "CommitOutcomeUnknownError",
    "ConfigError",
    "CorruptStateError",
    "IdempotencyKeyReusedError",
    "InvalidActorIdError",
    "InvalidKeyError",
    "InvocationTimeoutError",
    "JsonCodec",
    "KelpieError",
    "MailboxFullError",
    "Runtime",
    "RuntimeClosedError",
    "SerializationError",
    "StateCodec",
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
