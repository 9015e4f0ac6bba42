"""The Redis backend family: ``redis://`` (script or ``?commit=multi``) and ``redis+cluster://``.

Modules: ``storage`` (one server), ``cluster`` (Redis Cluster), ``keys`` (key
layout, ADR 0003), ``script`` and ``multi`` (the two commit modes),
``pipeline`` (group commit on one connection), ``errors`` (translation),
``actors`` (list_actors/delete_actor: the actor index and delete counter, ADR
0014), ``sweep`` (listing on Redis Cluster), ``options`` (shared URL options).
"""

from kelpie.storage.redis.storage import COMMIT_SCRIPT, DEFAULT_PREFIX, RedisStorage, open_redis

__all__ = ["COMMIT_SCRIPT", "DEFAULT_PREFIX", "RedisStorage", "open_redis"]
