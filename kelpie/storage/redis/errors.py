"""Translate ``redis.*`` (and socket) exceptions into kelpie's errors: the one mapping.

Most specific first. ``sent`` says whether the bytes of a commit (the call of
the check-and-set script, ADR 0008) may already have reached the server: a
lost connection, a timeout or a garbled reply after that point means the
commit may or may not have landed (``CommitOutcomeUnknownError``); before it,
nothing was written (``StorageUnavailableError``). Reads write nothing, so
they are never ``sent``.

Credentials the server rejects are a ``ConfigError``: retrying cannot help
until the storage URL is fixed, and nothing was written (Redis refuses every
command of an unauthenticated connection, the commit script included).
"""

from __future__ import annotations

import redis.exceptions as rex

from kelpie.errors import (
    CommitOutcomeUnknownError,
    ConfigError,
    CorruptStateError,
    KelpieError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
)

__all__ = ["translate_redis_error"]


def _describe(exc: BaseException, secret: str | None) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    return text


def translate_redis_error(
    exc: BaseException,
    *,
    where: str,
    action: str,
    sent: bool = False,
    secret: str | None = None,
) -> KelpieError:
    """The kelpie error for ``exc``, raised while doing ``action`` against ``where``.

    ``where`` is the password-free URL; ``secret`` (the password, if any) is
    scrubbed from the message in case a driver ever echoed it.
    """
    detail = _describe(exc, secret)
    if isinstance(
        exc,
        rex.AuthenticationError | rex.AuthorizationError | rex.AuthenticationWrongNumberOfArgsError,
    ):
        return ConfigError(
            f"redis at {where} rejected kelpie's credentials while {action}: check the "
            f"user and password of the storage URL ({type(exc).__name__})"
        )
    if isinstance(exc, rex.ResponseError) and "unauthenticated" in str(exc):
        # Redis refuses a long command from a client that has not authenticated
        # ("Protocol error: unauthenticated multibulk length") before NOAUTH.
        return ConfigError(
            f"redis at {where} requires authentication while {action}: check the "
            f"user and password of the storage URL"
        )
    if isinstance(exc, rex.NoPermissionError):
        return ConfigError(
            f"the redis user of {where} lacks a permission kelpie needs while {action} ({detail})"
        )
    if isinstance(exc, rex.MovedError | rex.ClusterCrossSlotError):
        return ConfigError(
            f"{where} is a Redis Cluster node; kelpie's redis backend needs a "
            f"single primary ({detail})"
        )
    if isinstance(exc, rex.MaxConnectionsError):
        return StorageUnavailableError(
            f"no free connection to {where} while {action}; nothing was written ({detail})"
        )
    if sent:
        # Error *replies* to a commit are handled by the caller; anything raised
        # once the commit may have been sent (lost connection, timeout, garbled
        # reply) leaves the outcome unknown.
        return CommitOutcomeUnknownError(
            f"the connection to {where} failed after the commit was sent; it may or may "
            f"not have landed: reload before deciding ({detail})"
        )
    if isinstance(exc, rex.ConnectionError | rex.TimeoutError | OSError | EOFError):
        return StorageUnavailableError(
            f"redis at {where} is unavailable while {action}; nothing was written ({detail})"
        )
    if isinstance(exc, rex.OutOfMemoryError):
        return StorageFullError(
            f"redis at {where} is out of memory (maxmemory) while {action}; "
            f"nothing was written ({detail})"
        )
    if isinstance(exc, rex.ReadOnlyError | rex.ClusterDownError | rex.TryAgainError):
        return StorageUnavailableError(
            f"redis at {where} does not accept writes right now while {action}; "
            f"nothing was written ({detail})"
        )
    if isinstance(exc, rex.ResponseError):
        message = str(exc)
        if message.startswith("MISCONF"):
            return StorageUnavailableError(
                f"redis at {where} refuses writes because it cannot persist (MISCONF) "
                f"while {action}; nothing was written ({detail})"
            )
        if message.startswith("WRONGTYPE"):
            return CorruptStateError(
                f"a key under kelpie's prefix at {where} has the wrong type: something "
                f"other than kelpie wrote it ({detail})"
            )
        return StorageError(f"redis at {where} answered an error while {action} ({detail})")
    if isinstance(exc, rex.RedisError):
        return StorageError(f"redis client error while {action} against {where} ({detail})")
    return StorageError(f"unexpected error while {action} against {where} ({detail})")
