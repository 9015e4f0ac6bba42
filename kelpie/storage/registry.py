"""One registry of storage schemes, and ``open_storage``.

Built-in schemes map to ``"module:factory"`` strings imported on first use, so
``import kelpie`` costs nothing for backends you do not use. Third parties add
schemes through the entry-point group ``kelpie.storage`` (the entry point's
name is the scheme, its object a ``factory(url: str, **options) -> Storage``)
or, in-process, with ``register_scheme``.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from kelpie.errors import ConfigError
from kelpie.storage.lifecycle import note_scheme
from kelpie.storage.protocol import Storage
from kelpie.storage.url import StorageURL

__all__ = [
    "DEFAULT_URL",
    "ENTRY_POINT_GROUP",
    "ENV_VAR",
    "known_schemes",
    "open_storage",
    "register_scheme",
    "resolve_url",
]

StorageFactory = Callable[..., Storage]

DEFAULT_URL = "lmdb://./kelpie-data"
ENV_VAR = "KELPIE_STORAGE_URL"
CONFIG_FILE = "kelpie.toml"
ENTRY_POINT_GROUP = "kelpie.storage"

# scheme -> (import target, what to pip install if its driver is missing)
_BUILTIN: dict[str, tuple[str, str | None]] = {
    "memory": ("kelpie.storage.memory:open_memory", None),
    # py-lmdb is a core dependency: missing, the installation is broken.
    "lmdb": ("kelpie.storage.lmdb:open_lmdb", "lmdb"),
    "redis": ("kelpie.storage.redis:open_redis", "'kelpie[redis]'"),
    "rediss": ("kelpie.storage.redis:open_redis", "'kelpie[redis]'"),
    "unix": ("kelpie.storage.redis:open_redis", "'kelpie[redis]'"),
    "redis+cluster": ("kelpie.storage.redis.cluster:open_redis_cluster", "'kelpie[redis]'"),
    "postgresql": ("kelpie.storage.postgres:open_postgres", "'kelpie[postgres]'"),
    "postgres": ("kelpie.storage.postgres:open_postgres", "'kelpie[postgres]'"),
    # sqlite3 is in the standard library: missing, the Python build lacks it.
    "sqlite": ("kelpie.storage.sqlite:open_sqlite", None),
}
_registered: dict[str, StorageFactory] = {}


def register_scheme(scheme: str, factory: StorageFactory) -> None:
    """Make ``scheme://`` URLs open with ``factory(url, **options)`` in this process."""
    _registered[scheme.lower()] = factory


def _entry_point_schemes() -> dict[str, Any]:
    return {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_schemes() -> list[str]:
    """Every scheme ``open_storage`` accepts, sorted."""
    return sorted({*_BUILTIN, *_registered, *_entry_point_schemes()})


def _load_builtin(scheme: str) -> StorageFactory:
    target, requirement = _BUILTIN[scheme]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f": pip install {requirement}" if requirement else ""
        raise ConfigError(
            f"the {scheme}:// backend needs a package that is not installed ({exc.name}){hint}"
        ) from exc
    factory: StorageFactory = getattr(module, attr)
    return factory


def _factory_for(scheme: str) -> StorageFactory:
    if scheme in _registered:
        return _registered[scheme]
    if scheme in _BUILTIN:
        return _load_builtin(scheme)
    plugins = _entry_point_schemes()
    if scheme in plugins:
        try:
            factory: StorageFactory = plugins[scheme].load()
        except Exception as exc:
            raise ConfigError(
                f"the {scheme}:// backend's entry point failed to load: {type(exc).__name__}"
            ) from exc
        return factory
    raise ConfigError(
        f"unknown storage scheme {scheme!r}; known schemes: " + ", ".join(known_schemes())
    )


def resolve_url(url: str | None = None) -> str:
    """The storage URL to use: the argument, else ``$KELPIE_STORAGE_URL``, else
    ``[storage] url`` in ``./kelpie.toml``, else ``lmdb://./kelpie-data``."""
    if url is not None:
        return url
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return from_env
    config = Path(CONFIG_FILE)
    if config.is_file():
        try:
            data = tomllib.loads(config.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config} is not valid TOML: {exc}") from exc
        section = data.get("storage")
        if section is not None:
            if not isinstance(section, dict):
                raise ConfigError(f"[storage] in {config} must be a table")
            configured = section.get("url")
            if configured is not None:
                if not isinstance(configured, str):
                    raise ConfigError(f"[storage] url in {config} must be a string")
                return configured
    return DEFAULT_URL


def open_storage(url: str | None = None, **options: Any) -> Storage:
    """Open the storage a URL names; no network I/O happens until first use.

    ``url`` defaults as described in ``resolve_url``. Unknown schemes and
    options raise ``ConfigError`` listing the known ones.
    """
    resolved = resolve_url(url)
    scheme = StorageURL.parse(resolved).scheme
    storage = _factory_for(scheme)(resolved, **options)
    note_scheme(storage, scheme)
    return storage
