"""The Redis backend family: ``redis://`` (script or ``?commit=multi``) and ``redis+cluster://``.

Modules: ``storage`` (one server), ``cluster`` (Redis Cluster), ``keys`` (key
layout, ADR 0003), ``script`` and ``multi`` (the two commit modes),
``pipeline`` (group commit on one connection), ``errors`` (translation).
"""

from kelpie.storage.redis.storage import COMMIT_SCRIPT, DEFAULT_PREFIX, RedisStorage, open_redis

__all__ = ["COMMIT_SCRIPT", "DEFAULT_PREFIX", "RedisStorage", "open_redis"]
