"""Translate ``asyncpg`` (and socket) exceptions into kelpie errors: the one mapping.

Most specific first; every exception that leaves the backend goes through
``translate`` and is raised ``from`` the original. ``sent`` says whether a
commit statement may already have reached the server: then a lost
connection, a timeout on our side or a server shutting down means the commit
may or may not have landed (``CommitOutcomeUnknownError``). An ordinary error
*reply* (a statement timeout, a deadlock, a full disk) means the server
rolled the statement back: nothing was written, whatever ``sent`` says.
"""

from __future__ import annotations

import asyncpg
import asyncpg.exceptions as pgx

from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    CorruptStateError,
    KelpieError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
    TransactionConflictError,
)

__all__ = ["is_retryable", "translate"]

# Replies that end the session or the server: what happened to the statement
# in flight is not reported (the server may have committed it first).
_SESSION_ENDING = (
    pgx.AdminShutdownError,
    pgx.CrashShutdownError,
    pgx.CannotConnectNowError,
    pgx.PostgresConnectionError,
    pgx.FatalPostgresError,
)


def _describe(exc: BaseException, secret: str | None) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    return text


def is_retryable(exc: BaseException) -> bool:
    """True for an error reply after which re-running the statement is safe and may succeed
    (a deadlock between two processes' batches, a serialization failure)."""
    return isinstance(exc, pgx.DeadlockDetectedError | pgx.SerializationError)


def translate(
    exc: BaseException,
    *,
    where: str,
    action: str,
    sent: bool = False,
    secret: str | None = None,
) -> KelpieError:
    """The kelpie error for ``exc``, raised while doing ``action`` against ``where``.

    ``where`` is the password-free URL; ``secret`` (the password, if any) is
    scrubbed from the message in case a driver or server ever echoed it.
    """
    detail = _describe(exc, secret)
    if isinstance(
        exc,
        pgx.InvalidPasswordError | pgx.InvalidAuthorizationSpecificationError,
    ):
        return ConfigError(
            f"PostgreSQL at {where} rejected kelpie's credentials while {action}: check the "
            f"user and password of the storage URL ({type(exc).__name__})"
        )
    if isinstance(exc, pgx.InvalidCatalogNameError):
        return ConfigError(f"the database of {where} does not exist ({detail})")
    if isinstance(exc, pgx.InsufficientPrivilegeError):
        return ConfigError(
            f"the PostgreSQL user of {where} lacks a privilege kelpie needs while {action} "
            f"({detail})"
        )
    if isinstance(exc, asyncpg.ClientConfigurationError):
        return ConfigError(f"bad connection settings for {where} ({detail})")
    if sent and not (isinstance(exc, pgx.PostgresError) and not isinstance(exc, _SESSION_ENDING)):
        return CommitOutcomeUnknownError(
            f"the connection to {where} failed after the commit was sent; it may or may "
            f"not have landed: reload before deciding ({detail})"
        )
    if is_retryable(exc):
        return TransactionConflictError(
            f"PostgreSQL at {where} rolled back a statement while {action} "
            f"(another process's commit locked the same rows); nothing was written ({detail})"
        )
    if isinstance(exc, pgx.DiskFullError | pgx.OutOfMemoryError):
        return StorageFullError(
            f"PostgreSQL at {where} is out of space while {action}; nothing was written ({detail})"
        )
    if isinstance(exc, pgx.DataCorruptedError | pgx.IndexCorruptedError):
        return CorruptStateError(f"PostgreSQL at {where} reports corruption ({detail})")
    if isinstance(
        exc,
        pgx.QueryCanceledError
        | pgx.InsufficientResourcesError
        | pgx.ReadOnlySQLTransactionError
        | pgx.LockNotAvailableError
        | pgx.OperatorInterventionError
        | pgx.PostgresConnectionError
        | pgx.FatalPostgresError
        | asyncpg.InterfaceError
        | ConnectionError
        | TimeoutError
        | OSError
        | EOFError,
    ):
        return StorageUnavailableError(
            f"PostgreSQL at {where} is unavailable while {action}; nothing was written ({detail})"
        )
    if isinstance(exc, pgx.PostgresError):
        return StorageError(f"PostgreSQL at {where} answered an error while {action} ({detail})")
    return StorageError(f"unexpected error while {action} against {where} ({detail})")
