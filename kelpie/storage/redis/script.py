"""kelpie's check-and-set commit script (ADR 0008) and how a call of it is packed.

``kelpie.storage.redis`` sends it (``EVALSHA``, then ``EVAL`` on ``NOSCRIPT``);
servers that refuse scripting get ``WATCH``/``MULTI``/``EXEC`` instead
(``kelpie.storage.redis.multi``).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from kelpie.storage.base import Writes
from kelpie.storage.redis.keys import ActorKeys
from kelpie.storage.redis.pipeline import BULK_HEADER_LIMIT, BULK_HEADERS, CRLF, pack, pack_args

__all__ = [
    "COMMIT_SCRIPT",
    "EVALSHA_HEAD",
    "EVAL_HEAD",
    "commit_call",
    "packed_keys",
    "parse_version",
]

# -- the commit script (ADR 0008) ------------------------------------------------
#
# KEYS: version, data hash, index zset (one hash slot). ARGV[1]: the expected
# version ('' = write-only, never conflicts); ARGV[2]: the number of puts;
# then key, value per put; then the deleted keys (written with variadic
# HSET/ZADD/HDEL/ZREM, at most 200 puts or 400 deletes per call, well inside
# Lua's stack for unpack). The index holds exactly the data hash's fields, so
# a chunk of puts whose HSET added no field (every key existed: an update)
# skips its ZADD, half the server's work for a wide update while both are
# small listpacks (a lookup there is a linear scan). Every check comes before
# the first write, so a wrong-type key (written by something other than
# kelpie) fails the commit with nothing applied. Answers 0 on a conflict,
# else the new version (>= 1).

COMMIT_SCRIPT = b"""
local version = redis.call('GET', KEYS[1])
if version and not string.match(version, '^%d+$') then
  return redis.error_reply('WRONGTYPE the version key does not hold a version')
end
if ARGV[1] ~= '' and (version or '0') ~= ARGV[1] then
  return 0
end
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'none' and kind ~= 'hash' then
  return redis.error_reply('WRONGTYPE the data key is not a hash')
end
kind = redis.call('TYPE', KEYS[3])['ok']
if kind ~= 'none' and kind ~= 'zset' then
  return redis.error_reply('WRONGTYPE the index key is not a sorted set')
end
local unpack = unpack or table.unpack
local i = 3
local left = tonumber(ARGV[2])
while left > 0 do
  local n = math.min(left, 200)
  if redis.call('HSET', KEYS[2], unpack(ARGV, i, i + 2 * n - 1)) > 0 then
    local scored = {}
    for p = 0, n - 1 do
      scored[2 * p + 1] = 0
      scored[2 * p + 2] = ARGV[i + 2 * p]
    end
    redis.call('ZADD', KEYS[3], unpack(scored))
  end
  i = i + 2 * n
  left = left - n
end
while i <= #ARGV do
  local last = math.min(i + 399, #ARGV)
  redis.call('HDEL', KEYS[2], unpack(ARGV, i, last))
  redis.call('ZREM', KEYS[3], unpack(ARGV, i, last))
  i = last + 1
end
return redis.call('INCR', KEYS[1])
"""
COMMIT_SHA = hashlib.sha1(COMMIT_SCRIPT).hexdigest().encode("ascii")


EVALSHA_HEAD = b"$7\r\nEVALSHA\r\n$40\r\n" + COMMIT_SHA + b"\r\n"
EVAL_HEAD = b"$4\r\nEVAL\r\n$%d\r\n%b\r\n" % (len(COMMIT_SCRIPT), COMMIT_SCRIPT)


@lru_cache(maxsize=8192)
def packed_keys(keys: ActorKeys) -> tuple[bytes, bytes]:
    """``GET version``, and the ``numkeys`` and KEYS of a commit call, packed once per actor."""
    fragment: list[bytes] = []
    pack_args((b"3", keys.version, keys.data, keys.index), fragment)
    return pack([(b"GET", keys.version)]), b"".join(fragment)


def commit_call(head: bytes, keys: ActorKeys, expected: bytes, writes: Writes) -> bytes:
    """The packed ``EVALSHA``/``EVAL`` (``head``) of the commit script for ``writes``."""
    # The hot loop of a wide commit: each put becomes six pieces of the final
    # join, its length headers looked up rather than formatted (pack_args).
    headers, limit, crlf = BULK_HEADERS, BULK_HEADER_LIMIT, CRLF
    body: list[bytes] = []
    extend = body.extend
    deleted: list[bytes] = []
    for key, value in writes.items():
        if value is None:
            deleted.append(key)
            continue
        size = len(value)
        extend(
            (
                headers[len(key)] if len(key) < limit else b"$%d\r\n" % len(key),
                key,
                crlf,
                headers[size] if size < limit else b"$%d\r\n" % size,
                value,
                crlf,
            )
        )
    pack_args(deleted, body)
    puts = len(writes) - len(deleted)
    out = [b"*%d\r\n" % (8 + 2 * puts + len(deleted)), head, packed_keys(keys)[1]]
    pack_args((expected, b"%d" % puts), out)
    out += body
    return b"".join(out)


def parse_version(reply: Any) -> int:
    """The actor's version from a ``GET version`` reply (nil = 0); raise if it is not one."""
    if reply is None:
        return 0
    if isinstance(reply, bytes) and reply.isdigit():
        return int(reply)
    raise ValueError(f"not a version: {reply!r}")
