"""Storage: the ``Storage``/``Transaction`` protocols, URLs, and the backend registry."""

from kelpie.storage.base import BufferedTransaction, StorageBase
from kelpie.storage.limits import MAX_KEY_BYTES, MAX_VALUE_BYTES
from kelpie.storage.protocol import Storage, Transaction
from kelpie.storage.registry import known_schemes, open_storage, register_scheme, resolve_url
from kelpie.storage.url import StorageURL

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "BufferedTransaction",
    "Storage",
    "StorageBase",
    "StorageURL",
    "Transaction",
    "known_schemes",
    "open_storage",
    "register_scheme",
    "resolve_url",
]
