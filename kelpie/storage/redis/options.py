"""The options every Redis scheme shares (``redis://``, ``redis+cluster://``), checked once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from kelpie.errors import ConfigError
from kelpie.storage.group_commit import DEFAULT_MAX_BATCH
from kelpie.storage.options import as_bool, as_float, as_int, as_str
from kelpie.storage.redis.keys import check_prefix_name
from kelpie.storage.url import StorageURL

__all__ = ["COMMON_OPTIONS", "DEFAULT_PREFIX", "CommonOptions"]

DEFAULT_PREFIX = "kelpie"

COMMON_OPTIONS = {
    "prefix": as_str,
    "socket_timeout": as_float,
    "connect_timeout": as_float,
    "max_connections": as_int,
    "pool_timeout": as_float,
    "group_commit": as_bool,
    "max_batch": as_int,
}
_SSL_OPTIONS = {"ssl_cert_reqs": as_str, "ssl_ca_certs": as_str}
_CERT_REQS = ("none", "optional", "required")


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(f"option {name!r} must be positive, got {value!r}")
    return value


@dataclass(frozen=True)
class CommonOptions:
    """The checked options every Redis scheme shares (``redis+cluster://`` too)."""

    prefix: str
    socket_timeout: float
    connect_timeout: float
    pool_timeout: float
    max_connections: int
    group_commit: bool
    max_batch: int

    @classmethod
    def check(cls, opts: dict[str, Any]) -> CommonOptions:
        """Defaults filled in and values checked; a bad one raises ``ConfigError``."""
        max_connections = opts.get("max_connections", 100)
        if max_connections < 1:
            raise ConfigError(f"option 'max_connections' must be at least 1, got {max_connections}")
        max_batch = opts.get("max_batch", DEFAULT_MAX_BATCH)
        if max_batch < 1:
            raise ConfigError(f"option 'max_batch' must be at least 1, got {max_batch}")
        return cls(
            prefix=check_prefix_name(opts.get("prefix", DEFAULT_PREFIX)),
            socket_timeout=_positive("socket_timeout", opts.get("socket_timeout", 5.0)),
            connect_timeout=_positive("connect_timeout", opts.get("connect_timeout", 2.0)),
            pool_timeout=_positive("pool_timeout", opts.get("pool_timeout", 5.0)),
            max_connections=max_connections,
            group_commit=opts.get("group_commit", True),
            max_batch=max_batch,
        )

    def connection_kwargs(self, parsed: StorageURL) -> dict[str, Any]:
        """redis-py connection arguments: credentials, timeouts and no retries, ever."""
        return {
            "username": parsed.username,
            "password": parsed.password,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            # No transparent retries anywhere: a retried commit could apply twice.
            "retry": Retry(NoBackoff(), 0),
            "retry_on_error": [],
            "protocol": 2,
            "driver_info": None,
            "health_check_interval": 0,
        }
