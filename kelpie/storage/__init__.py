"""Storage: the ``Storage``/``Transaction`` protocols, URLs, and the backend registry."""

from kelpie.storage.base import BufferedTransaction, StorageBase
from kelpie.storage.limits import MAX_KEY_BYTES, MAX_VALUE_BYTES
from kelpie.storage.protocol import Storage, Transaction
from kelpie.storage.registry import known_schemes, open_storage, register_scheme, resolve_url
from kelpie.storage.url import StorageURL
from kelpie.storage.wrapper import StorageWrapper, TransactionWrapper

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "BufferedTransaction",
    "Storage",
    "StorageBase",
    "StorageURL",
    "StorageWrapper",
    "Transaction",
    "TransactionWrapper",
    "known_schemes",
    "open_storage",
    "register_scheme",
    "resolve_url",
]
