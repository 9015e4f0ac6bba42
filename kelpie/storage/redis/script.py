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
    "DELETE_SCRIPT",
    "EVALSHA_HEAD",
    "EVAL_HEAD",
    "INDEX_SCRIPT",
    "commit_call",
    "packed_keys",
    "parse_token",
    "parse_version",
    "script_call",
]

# -- the commit script (ADR 0008, ADR 0014) --------------------------------------
#
# KEYS: version, data hash, key index zset, actor index zset, delete counter
# (one hash slot). ARGV[1]: the expected fence token ('' = write-only, never
# conflicts): the version, or '@' .. the delete counter while the actor has no
# version; ARGV[2]: the number of puts; ARGV[3]: the actor's index member;
# then key, value per put; then the deleted keys (written with variadic
# HSET/ZADD/HDEL/ZREM, at most 200 puts or 400 deletes per call, well inside
# Lua's stack for unpack). The key index holds exactly the data hash's
# fields, so a chunk of puts whose HSET added no field (every key existed: an
# update) skips its ZADD, half the server's work for a wide update while both
# are small listpacks (a lookup there is a linear scan). An actor's member is
# in the actor index exactly while its data hash exists: only a commit that
# creates or empties the hash touches the index. A new version key starts
# from the delete counter, so versions never repeat across a delete (ADR
# 0014). Every check comes before the first write, so a wrong-type key
# (written by something other than kelpie) fails the commit with nothing
# applied. Answers 0 on a conflict, else the new version (>= 1).

_CHECKS = b"""
local version = redis.call('GET', KEYS[1])
if version and not string.match(version, '^%d+$') then
  return redis.error_reply('WRONGTYPE the version key does not hold a version')
end
local floor = nil
if not version then
  floor = redis.call('GET', KEYS[5])
  if floor and not string.match(floor, '^%d+$') then
    return redis.error_reply('WRONGTYPE the delete counter does not hold a number')
  end
end
"""

COMMIT_SCRIPT = (
    _CHECKS
    + b"""
if ARGV[1] ~= '' and (version or ('@' .. (floor or '0'))) ~= ARGV[1] then
  return 0
end
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'none' and kind ~= 'hash' then
  return redis.error_reply('WRONGTYPE the data key is not a hash')
end
local had = kind ~= 'none'
kind = redis.call('TYPE', KEYS[3])['ok']
if kind ~= 'none' and kind ~= 'zset' then
  return redis.error_reply('WRONGTYPE the index key is not a sorted set')
end
local left = tonumber(ARGV[2])
if not had or #ARGV > 3 + 2 * left then
  kind = redis.call('TYPE', KEYS[4])['ok']
  if kind ~= 'none' and kind ~= 'zset' then
    return redis.error_reply('WRONGTYPE the actor index is not a sorted set')
  end
end
local unpack = unpack or table.unpack
local i = 4
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
local has = had
if tonumber(ARGV[2]) > 0 then
  has = true
elseif #ARGV > 3 then
  has = redis.call('EXISTS', KEYS[2]) == 1
end
if has and not had then
  redis.call('ZADD', KEYS[4], 0, ARGV[3])
elseif had and not has then
  redis.call('ZREM', KEYS[4], ARGV[3])
end
if floor then
  redis.call('SET', KEYS[1], floor)
end
return redis.call('INCR', KEYS[1])
"""
)
COMMIT_SHA = hashlib.sha1(COMMIT_SCRIPT).hexdigest().encode("ascii")

# KEYS: version, data hash, key index, actor index, delete counter, and the
# cluster's first-read marker (ADR 0008 §5). ARGV[1]: the actor's member.
# Removes every key of the actor and its member, and raises the delete
# counter to the actor's last version: a version key made later starts above
# it, so no version of this actor comes back (ADR 0014). Answers 1 if there
# was anything to delete, else 0.
DELETE_SCRIPT = (
    _CHECKS
    + b"""
floor = redis.call('GET', KEYS[5])
if floor and not string.match(floor, '^%d+$') then
  return redis.error_reply('WRONGTYPE the delete counter does not hold a number')
end
local kind = redis.call('TYPE', KEYS[4])['ok']
if kind ~= 'none' and kind ~= 'zset' then
  return redis.error_reply('WRONGTYPE the actor index is not a sorted set')
end
local gone = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[6])
redis.call('ZREM', KEYS[4], ARGV[1])
if version and tonumber(version) > tonumber(floor or '0') then
  redis.call('SET', KEYS[5], version)
end
if gone > 0 then
  return 1
end
return 0
"""
)
DELETE_SHA = hashlib.sha1(DELETE_SCRIPT).hexdigest().encode("ascii")

# KEYS: pairs of (data hash, actor index) of one hash slot each call; ARGV:
# the members. Indexes each actor whose data hash exists, atomically with
# that check: building the index of older data (ADR 0014) never adds an actor
# a concurrent commit just emptied.
INDEX_SCRIPT = b"""
local added = 0
for n = 1, #ARGV do
  if redis.call('EXISTS', KEYS[2 * n - 1]) == 1 then
    added = added + redis.call('ZADD', KEYS[2 * n], 0, ARGV[n])
  end
end
return added
"""
INDEX_SHA = hashlib.sha1(INDEX_SCRIPT).hexdigest().encode("ascii")


EVALSHA_HEAD = b"$7\r\nEVALSHA\r\n$40\r\n" + COMMIT_SHA + b"\r\n"
EVAL_HEAD = b"$4\r\nEVAL\r\n$%d\r\n%b\r\n" % (len(COMMIT_SCRIPT), COMMIT_SCRIPT)


@lru_cache(maxsize=8192)
def packed_keys(keys: ActorKeys) -> tuple[bytes, bytes]:
    """``MGET version deletes`` (a read's fence token), and the ``numkeys``, KEYS and
    member of a commit call, packed once per actor."""
    fragment: list[bytes] = []
    pack_args((b"5", keys.version, keys.data, keys.index, keys.actors, keys.deletes), fragment)
    return pack([(b"MGET", keys.version, keys.deletes)]), b"".join(fragment)


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
    out = [b"*%d\r\n" % (11 + 2 * puts + len(deleted)), head, packed_keys(keys)[1]]
    pack_args((expected, b"%d" % puts, keys.member), out)
    out += body
    return b"".join(out)


def script_call(script: bytes, evalsha: bool, keys: list[bytes], args: list[bytes]) -> bytes:
    """A packed ``EVALSHA`` (or ``EVAL``) of ``script`` with ``keys`` and ``args``."""
    if evalsha:
        head: list[bytes] = [b"EVALSHA", hashlib.sha1(script).hexdigest().encode("ascii")]
    else:
        head = [b"EVAL", script]
    return pack([(*head, b"%d" % len(keys), *keys, *args)])


def parse_token(reply: Any) -> bytes:
    """The fence token from an ``MGET version deletes`` reply; raise if it is not one.

    The version while the actor has one, else ``@`` and the delete counter
    (ADR 0014): a transaction that read the actor absent conflicts if an actor
    of the same slot (store, on one server) was deleted meanwhile.
    """
    if not isinstance(reply, list) or len(reply) != 2:
        raise ValueError(f"not a version and a delete counter: {reply!r}")
    version, deletes = reply
    if version is not None:
        if isinstance(version, bytes) and version.isdigit():
            return version
        raise ValueError(f"not a version: {version!r}")
    if deletes is None:
        return b"@0"
    if isinstance(deletes, bytes) and deletes.isdigit():
        return b"@" + deletes
    raise ValueError(f"not a delete counter: {deletes!r}")


def parse_version(reply: Any) -> int:
    """The actor's version from a ``GET version`` reply (nil = 0); raise if it is not one."""
    if reply is None:
        return 0
    if isinstance(reply, bytes) and reply.isdigit():
        return int(reply)
    raise ValueError(f"not a version: {reply!r}")
