"""A run-private key prefix on a user's Redis, and removing everything under it afterwards.

``kelpie conformance`` and ``kelpie bench`` write into the store a user names.
Deleting every actor they made (``delete_actor``) still leaves the store-wide
keys a delete must leave behind -- the index format marker and the deletes
counter (ADR 0013, 0014) -- and those belong to the user's store if it shares
the prefix. So these commands run under a prefix of their own, below the
user's (``<prefix>:<label>-<8 hex digits>``: an ACL pattern such as
``kelpie:*`` still covers it), and at the end remove every key under it with
``SCAN MATCH`` + ``UNLINK`` on each master: nothing of the run is left, and no
key of the user's is touched.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from kelpie.storage.redis.options import DEFAULT_PREFIX
from kelpie.storage.url import StorageURL

__all__ = ["REDIS_SCHEMES", "drop_prefix", "scratch_url"]

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster"})
"""The schemes whose stores ``scratch_url`` gives a private prefix."""

_SCAN_COUNT = 1000


def scratch_url(url: str, label: str) -> str:
    """``url`` with a new, run-private key prefix below its own (Redis URLs only).

    Any other URL is returned unchanged: its stores have no shared keys to
    protect (the commands clean up by ``delete_actor`` alone there).
    """
    if StorageURL.parse(url).scheme not in REDIS_SCHEMES:
        return url
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in query if name == "prefix"), DEFAULT_PREFIX)
    private = f"{prefix}:{label}-{secrets.token_hex(4)}"
    query = [(name, value) for name, value in query if name != "prefix"] + [("prefix", private)]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def drop_prefix(url: str) -> int:
    """Remove every key under the key prefix of the Redis store ``url`` names, on every
    master; the number removed. Only for prefixes no one else uses (``scratch_url``)."""
    from kelpie.storage.redis.actors import escape_glob, node_commands
    from kelpie.storage.redis.storage import RedisStorage
    from kelpie.storage.registry import open_storage

    scheme = StorageURL.parse(url).scheme
    if scheme not in REDIS_SCHEMES:
        raise ValueError(f"drop_prefix needs a Redis URL, got a {scheme}:// one")
    storage = open_storage(url)
    try:
        assert isinstance(storage, RedisStorage)
        pattern = escape_glob(storage.prefix) + b":*"
        removed = 0
        for node, pool in await storage._masters():
            cursor = b"0"
            while True:
                command = (b"SCAN", cursor, b"MATCH", pattern, b"COUNT", b"%d" % _SCAN_COUNT)
                ((reply, keys),) = await node_commands(
                    storage, node, pool, [command], "removing a scratch prefix"
                )
                cursor = reply if isinstance(reply, bytes) else str(reply).encode()
                if keys:
                    # One key per UNLINK: on a cluster, keys of one node span many slots.
                    unlinks = [(b"UNLINK", key) for key in keys]
                    await node_commands(storage, node, pool, unlinks, "removing a scratch prefix")
                    removed += len(keys)
                if cursor == b"0":
                    break
        return removed
    finally:
        await storage.close()
