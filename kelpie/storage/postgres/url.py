"""``open_postgres``: parse a ``postgresql://`` URL and its options (no network I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kelpie.errors import ConfigError
from kelpie.storage.group_commit import DEFAULT_MAX_BATCH
from kelpie.storage.options import as_bool, as_float, as_int, as_str, merge_options
from kelpie.storage.url import StorageURL

if TYPE_CHECKING:
    from kelpie.storage.postgres.storage import PostgresStorage

__all__ = ["DEFAULT_PORT", "DEFAULT_TABLE", "PostgresOptions", "open_postgres", "postgres_options"]

DEFAULT_PORT = 5432
DEFAULT_TABLE = "kelpie"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_MAX_TABLE_BYTES = 56  # NAMEDATALEN - 1 = 63, less the "_actors" of the index name
_MAX_STATEMENT_TIMEOUT = 2**31 - 1  # the server's limit for the setting (an int of ms)
_MAX_POOL = 10_000
"""asyncpg makes a slot per connection up front: a huge pool_max would hang the first call."""

_OPTIONS = {
    "host": as_str,
    "table": as_str,
    "sslmode": as_str,
    "pool_min": as_int,
    "pool_max": as_int,
    "statement_timeout": as_int,
    "connect_timeout": as_float,
    "command_timeout": as_float,
    "group_commit": as_bool,
    "max_batch": as_int,
}


@dataclass(frozen=True)
class PostgresOptions:
    """The checked connection and storage settings of a ``postgresql://`` storage."""

    host: str
    port: int
    database: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    table: str = DEFAULT_TABLE
    """The one table kelpie uses, exactly as named (created on first use)."""
    sslmode: str = "prefer"
    """libpq's ``sslmode``: disable, allow, prefer (default), require, verify-ca, verify-full."""
    pool_min: int = 0
    """Connections kept open even when idle (0: opened on use, closed after 60 s idle)."""
    pool_max: int = 10
    statement_timeout: int = 0
    """Milliseconds after which the server cancels a statement (0: the server's setting)."""
    connect_timeout: float = 10.0
    """Seconds to wait for a new connection before ``StorageUnavailableError``."""
    command_timeout: float = 60.0
    """Seconds kelpie waits for any reply (0: forever): bounds a hang on a silent network.
    A commit past it is ``CommitOutcomeUnknownError``, a read ``StorageUnavailableError``."""
    group_commit: bool = True
    max_batch: int = DEFAULT_MAX_BATCH

    @property
    def where(self) -> str:
        """A password-free name of the store, for messages and ``repr``."""
        user = f"{self.user}@" if self.user else ""
        if self.host.startswith("/"):  # the directory of a unix socket
            return (
                f"postgresql://{user}:{self.port}/{self.database}"
                f"?host={self.host}&table={self.table}"
            )
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{user}{host}:{self.port}/{self.database}?table={self.table}"


def _check_text(scheme: str, part: str, text: str | None) -> None:
    """The startup packet and the SQL are NUL-terminated UTF-8: refuse what they cannot carry
    (a NUL would end the field early; a lone surrogate cannot be encoded)."""
    if text is None:
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"the {part} of a {scheme}:// URL is not valid Unicode") from None
    if "\x00" in text:
        raise ConfigError(f"the {part} of a {scheme}:// URL may not hold a NUL byte")


def _check_table(name: str) -> str:
    _check_text("postgresql", "option 'table'", name)
    if not name:
        raise ConfigError("option 'table' of postgresql:// must be a non-empty table name")
    if len(name.encode("utf-8")) > _MAX_TABLE_BYTES:
        raise ConfigError(
            f"option 'table' of postgresql:// is at most {_MAX_TABLE_BYTES} bytes "
            f"(PostgreSQL's name limit, less the index suffix)"
        )
    return name


def postgres_options(parsed: StorageURL, kwargs: dict[str, Any]) -> PostgresOptions:
    """The options a ``postgresql://`` URL and keyword arguments give; ``ConfigError`` if bad."""
    if parsed.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"open_postgres cannot open {parsed.scheme}:// URLs")
    if parsed.hosts:
        raise ConfigError("a postgresql:// URL names one server")
    values = merge_options(parsed.scheme, parsed.options, kwargs, _OPTIONS)
    host = values.pop("host", None) or parsed.host
    if not host:
        raise ConfigError(
            f"a {parsed.scheme}:// URL needs a host: {parsed.scheme}://user@localhost:5432/dbname "
            "(or ?host=/directory/of/the/unix/socket)"
        )
    database = parsed.path.strip("/")
    if not database or "/" in database:
        raise ConfigError(
            f"the path of a {parsed.scheme}:// URL is the database name: "
            f"{parsed.scheme}://user@host:5432/dbname"
        )
    for part, text in (
        ("host", host),
        ("database name", database),
        ("user", parsed.username),
        ("password", parsed.password),  # the messages never show the text
    ):
        _check_text(parsed.scheme, part, text)
    sslmode = values.get("sslmode", "prefer").strip().lower()
    if sslmode not in SSL_MODES:
        raise ConfigError(
            "option 'sslmode' of postgresql:// must be one of " + ", ".join(SSL_MODES)
        )
    values["sslmode"] = sslmode
    options = PostgresOptions(
        host=host,
        port=parsed.port if parsed.port is not None else DEFAULT_PORT,
        database=database,
        user=parsed.username,
        password=parsed.password,
        **values,
    )
    _check_table(options.table)
    if not 0 <= options.pool_min <= options.pool_max or not 1 <= options.pool_max <= _MAX_POOL:
        raise ConfigError(
            "options 'pool_min' and 'pool_max' of postgresql:// need 0 <= pool_min <= pool_max "
            f"and 1 <= pool_max <= {_MAX_POOL:,} (got {options.pool_min}, {options.pool_max})"
        )
    if not 0 <= options.statement_timeout <= _MAX_STATEMENT_TIMEOUT:
        raise ConfigError(
            "option 'statement_timeout' of postgresql:// is milliseconds from 0 to "
            f"{_MAX_STATEMENT_TIMEOUT:,} (PostgreSQL's limit)"
        )
    if not options.command_timeout >= 0:  # also refuses NaN, which times out every call
        raise ConfigError("option 'command_timeout' of postgresql:// is seconds >= 0 (0: none)")
    if not options.connect_timeout > 0:
        raise ConfigError("option 'connect_timeout' of postgresql:// must be positive (seconds)")
    if options.max_batch < 1:
        raise ConfigError("option 'max_batch' of postgresql:// must be at least 1")
    return options


def open_postgres(url: str, **options: Any) -> PostgresStorage:
    """Factory for ``postgresql://[user[:password]@]host[:port]/dbname[?table=NAME&...]``
    (also ``postgres://``); no network I/O until first use.

    Options (URL query or keywords): ``table`` (default ``kelpie``), ``host`` (a
    host name, or the directory of the server's unix socket, overriding the
    URL's host, as libpq's ``?host=``), ``sslmode``
    (disable, allow, prefer -- the default --, require, verify-ca, verify-full),
    ``pool_min``/``pool_max`` (connections, default 0/10), ``statement_timeout``
    (ms, default 0: the server's), ``connect_timeout`` (s, default 10),
    ``command_timeout`` (s kelpie waits for a reply, default 60, 0: forever),
    ``group_commit`` (default true), ``max_batch`` (default 128).
    """
    from kelpie.storage.postgres.storage import PostgresStorage  # imports asyncpg

    return PostgresStorage(postgres_options(StorageURL.parse(url), options))
