"""The one storage URL parser: parse once into a frozen ``StorageURL``.

Each backend validates its own options (``StorageURL.options`` merged with
keyword arguments, see ``kelpie.storage.options``). The ``repr`` and
``render()`` never show a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from kelpie.errors import ConfigError

__all__ = ["StorageURL"]


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL: ``scheme://[user[:password]@]host[:port]/path?query``."""

    scheme: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    path: str = ""
    query: tuple[tuple[str, str], ...] = ()
    hosts: tuple[tuple[str, int | None], ...] = ()
    """Every ``host[:port]`` of a netloc listing several, comma-separated (cluster seeds);
    ``host``/``port`` are the first. Empty for the usual one-host URL."""

    @classmethod
    def parse(cls, url: str) -> StorageURL:
        if not isinstance(url, str):
            raise ConfigError(f"a storage URL must be a str, got {type(url).__name__}")
        if "://" not in url:
            raise ConfigError(
                "a storage URL looks like scheme://..., e.g. memory://, "
                "lmdb://./kelpie-data or redis://localhost:6379/0"
            )
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. an unbalanced "[" in the host
            raise ConfigError(f"malformed storage URL: {exc}") from exc
        scheme = parts.scheme.lower()
        if not scheme:
            raise ConfigError("the storage URL has no scheme")
        hosts: tuple[tuple[str, int | None], ...] = ()
        userinfo, at, hostlist = parts.netloc.rpartition("@")
        if "," in hostlist:
            seeds = [cls.parse(f"{scheme}://{one}") for one in hostlist.split(",")]
            hosts = tuple((seed.host or "", seed.port) for seed in seeds)
            if not all(host for host, _ in hosts):
                raise ConfigError(f"the {scheme}:// URL lists an empty host")
            parts = parts._replace(netloc=f"{userinfo}{at}{hostlist.split(',')[0]}")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"the port of the {scheme}:// URL is not a number 0-65535") from exc
        try:
            query = tuple(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
        except ValueError as exc:  # pragma: no cover - parse_qsl is lenient
            raise ConfigError(f"the query of the {scheme}:// URL is malformed") from exc
        return cls(
            scheme=scheme,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            host=parts.hostname,
            port=port,
            path=unquote(parts.path),
            query=query,
            hosts=hosts,
        )

    @property
    def options(self) -> dict[str, str]:
        """The query parameters; a parameter given twice is an error."""
        result: dict[str, str] = {}
        for name, value in self.query:
            if name in result:
                raise ConfigError(f"option {name!r} is given twice in the {self.scheme}:// URL")
            result[name] = value
        return result

    def render(self) -> str:
        """The URL with any password replaced by ``***``; safe to log."""
        auth = ""
        if self.username is not None or self.password is not None:
            auth = self.username or ""
            if self.password is not None:
                auth += ":***"
            auth += "@"
        netloc = ",".join(
            (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
            for host, port in (self.hosts or ((self.host or "", self.port),))
        )
        query = "&".join(f"{k}={v}" for k, v in self.query)
        return f"{self.scheme}://{auth}{netloc}{self.path}" + (f"?{query}" if query else "")

    def __repr__(self) -> str:
        return f"StorageURL({self.render()!r})"

    def __str__(self) -> str:
        return self.render()
