"""Listing and deleting whole actors on Redis (ADR 0014): the actor index and delete counter.

Every commit that gives an actor its first key adds the actor's member to the
actor index (a sorted set, ``kelpie.storage.redis.keys.actor_member``: byte
order is ``ActorId`` order), and every commit that deletes its last key
removes it, inside the commit itself (the script, or the ``MULTI`` block).
``list_actors`` is then one ``ZRANGEBYLEX`` from ``after``. On Redis Cluster
each hash slot has its own index, merged by ``kelpie.storage.redis.sweep``.

``delete_actor`` removes the actor's keys and member in one script (or one
``MULTI`` under ``WATCH``) and raises the delete counter to the actor's last
version; a version key created later starts from that counter, so a
transaction that read the deleted actor can never match a version of the new
one, and one that read it absent (its fence token is ``@`` and the counter)
sees the counter move.

Stores written before the index existed: the first ``list_actors`` of a
storage looks for the format marker; without it, it ``SCAN``s each master
once for the actors' data hashes, indexes each one that still exists
(atomically with that check, so a concurrent commit that empties an actor
never leaves it indexed), then sets the marker. Commits keep the index right
from then on.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import redis.exceptions as rex
from redis.asyncio.connection import AbstractConnection, ConnectionPool

from kelpie.errors import CorruptStateError, InvalidActorIdError
from kelpie.identity import ActorId
from kelpie.storage.redis.keys import (
    actor_from_tag,
    actor_member,
    list_range,
    member_actor,
    slot_of_key,
    store_key,
)
from kelpie.storage.redis.multi import (
    fall_back_to_multi,
    judge_block,
    refuses_scripting,
    watched,
)
from kelpie.storage.redis.pipeline import Command, Request, pack, roundtrip
from kelpie.storage.redis.script import DELETE_SCRIPT, INDEX_SCRIPT, script_call

if TYPE_CHECKING:
    from kelpie.storage.redis.storage import RedisStorage

__all__ = [
    "decode_members",
    "delete_actor_keys",
    "ensure_index",
    "escape_glob",
    "eval_script",
    "list_on_server",
    "node_commands",
]

SCAN_COUNT = 5000
"""``COUNT`` of each ``SCAN`` step while indexing older data."""

_GLOB_SPECIAL = b"\\*?[]"


async def node_commands(
    storage: RedisStorage,
    node: object,
    pool: ConnectionPool,
    commands: Sequence[Command],
    action: str,
) -> list[Any]:
    """Send read commands to one server (``node``): their replies; error replies raise."""
    request = Request(pack(commands), len(commands), False, action)
    replies = await storage._send_to(node, pool, request)
    for reply in replies:
        if isinstance(reply, rex.ResponseError):
            raise storage._translate(reply, action) from reply
    return replies


async def list_on_server(
    storage: RedisStorage, namespace: str | None, after: ActorId | None, limit: int
) -> list[ActorId]:
    """``list_actors`` on one server: one ``ZRANGEBYLEX`` of the actor index."""
    await ensure_index(storage)
    low, high = list_range(namespace, after)
    index = store_key(storage.prefix, None, b"a")
    command = (b"ZRANGEBYLEX", index, low, high, b"LIMIT", b"0", b"%d" % limit)
    (reply,) = await node_commands(storage, None, storage._pool, [command], "listing actors")
    return decode_members(storage, reply)


def decode_members(storage: RedisStorage, members: list[Any]) -> list[ActorId]:
    """The actors of index members; a member kelpie did not write is ``CorruptStateError``."""
    actors = _decode_plain(members)
    if actors is not None:
        return actors
    try:
        return [member_actor(member) for member in members]
    except ValueError as exc:
        raise CorruptStateError(
            f"the actor index under {storage.prefix!r} at {storage.where} holds a member "
            f"kelpie did not write ({exc})"
        ) from exc


_END = b"\x00\x01"
"""Ends each part of a member (``actor_member``)."""

_PAST_END = b"\x00\x02"
"""Sorts after every member that starts with ``namespace + _END``."""


def _decode_plain(members: list[bytes]) -> list[ActorId] | None:
    """The actors of ``members`` (in index order) built in bulk, or None unless every
    member is plain -- ``ns 00 01 id 00 01``, no escaped NUL, valid parts; then
    ``member_actor`` decodes each, and names a bad one.

    Members of one namespace are contiguous: each run is checked and decoded
    with a few passes in C, no Python frame per member.
    """
    actors: list[ActorId] = []
    start, count = 0, len(members)
    while start < count:
        first = members[start]
        cut = first.find(_END)
        if cut < 1:
            return None
        stop = bisect_left(members, first[:cut] + _PAST_END, start)
        run = _decode_run(first[: cut + 2], members[start:stop])
        if run is None:
            return None
        actors += run
        start = stop
    return actors


def _decode_run(prefix: bytes, run: list[bytes]) -> list[ActorId] | None:
    """The actors of ``run``, members that should all be ``prefix`` (namespace + 00 01),
    an id, and ``00 01``; None if any is not."""
    count, skip = len(run), len(prefix)
    namespace = prefix[:-2]
    if b"\x00" in namespace:
        return None
    if (
        b"".join(map(itemgetter(slice(skip)), run)) != prefix * count
        or b"".join(map(itemgetter(slice(-2, None)), run)) != _END * count
        or b"".join(run).count(b"\x00") != 2 * count  # so no NUL (escaped) in an id
    ):
        return None
    try:
        return ActorId._decode_many(namespace, list(map(itemgetter(slice(skip, -2)), run)))
    except InvalidActorIdError:
        return None


# -- delete_actor ---------------------------------------------------------------


async def eval_script(
    storage: RedisStorage,
    actor: ActorId,
    script: bytes,
    keys: list[bytes],
    args: list[bytes],
    action: str,
) -> Any:
    """Run one of kelpie's writing scripts on the server of ``actor``: its reply.

    ``EVALSHA``, then ``EVAL`` on ``NOSCRIPT``; sent like a commit (same
    connection, so ordered with commits; same honest outcomes; Redis
    Cluster's ``WAIT``). A reply refusing scripting is returned, not raised.
    """
    packed = script_call(script, True, keys, args)
    replies = await storage._send(actor, Request(packed, 1, True, action))
    if isinstance(replies[0], rex.NoScriptError):
        packed = script_call(script, False, keys, args)
        replies = await storage._send(actor, Request(packed, 1, True, action))
    result, *suffix_replies = replies
    if isinstance(result, rex.ResponseError):
        if refuses_scripting(result):
            return result
        raise storage._translate(result, action) from result
    if suffix_replies:
        storage._check_commit_suffix(actor, suffix_replies)
    return result


async def delete_actor_keys(storage: RedisStorage, actor: ActorId) -> None:
    """Remove every key of ``actor`` and its index member, atomically (see the module)."""
    keys = storage._actor_keys(actor)
    action = "deleting an actor"
    if storage.commit_mode == "script":
        marker = keys.version[:-1] + b"w"  # Redis Cluster's first-read marker (ADR 0008)
        script_keys = [keys.version, keys.data, keys.index, keys.actors, keys.deletes, marker]
        result = await eval_script(
            storage, actor, DELETE_SCRIPT, script_keys, [keys.member], action
        )
        storage._actors_changed()
        if not refuses_scripting(result):
            return
        if storage._per_slot:
            raise storage._translate(result, action) from result
        fall_back_to_multi(storage, result)  # nothing ran: delete without a script

    async def attempt(conn: AbstractConnection) -> tuple[bytes, int] | None:
        try:
            version, floor, present = await roundtrip(
                conn,
                pack(
                    [
                        (b"GET", keys.version),
                        (b"GET", keys.deletes),
                        (b"EXISTS", keys.version, keys.data, keys.index),
                    ]
                ),
                3,
            )
        except Exception as exc:
            raise storage._translate(exc, action) from exc
        for reply in (version, floor, present):
            if isinstance(reply, rex.ResponseError):
                raise storage._translate(reply, action) from reply
        if not present:
            return None
        for value in (version, floor):
            if value is not None and not (isinstance(value, bytes) and value.isdigit()):
                raise CorruptStateError(
                    f"a counter of {actor} at {storage.where} holds {value!r}, not a number: "
                    f"something other than kelpie wrote it"
                )
        commands: list[Command] = [
            (b"MULTI",),
            (b"DEL", keys.version, keys.data, keys.index),
            (b"ZREM", keys.actors, keys.member),
        ]
        if version is not None and int(version) > int(floor or b"0"):
            commands.append((b"SET", keys.deletes, version))
        commands.append((b"EXEC",))
        return pack(commands), len(commands)

    watch = (b"WATCH", keys.version, keys.deletes)
    replies = await watched(storage, actor, watch, attempt, action)
    storage._actors_changed()
    if replies is not None:
        judge_block(storage, actor, replies)


# -- indexing data written before the index existed -------------------------------


def escape_glob(prefix: str) -> bytes:
    """``prefix`` with every glob character escaped, for ``SCAN ... MATCH``."""
    escaped = bytearray()
    for byte in prefix.encode("utf-8"):
        if byte in _GLOB_SPECIAL:
            escaped += b"\\"
        escaped.append(byte)
    return bytes(escaped)


def _scan_pattern(prefix: str) -> bytes:
    return escape_glob(prefix) + b":{*}:d"


async def ensure_index(storage: RedisStorage) -> None:
    """Index the actors of older data once per store (marked by the format key)."""
    if storage._index_ready:
        return
    marker = store_key(storage.prefix, 0 if storage._per_slot else None, b"f")
    node, pool = await storage._route_slot(0 if storage._per_slot else None)
    (found,) = await node_commands(storage, node, pool, [(b"GET", marker)], "listing actors")
    if found is None:
        for node, pool in await storage._masters():
            await _index_server(storage, node, pool)
        node, pool = await storage._route_slot(0 if storage._per_slot else None)
        await node_commands(storage, node, pool, [(b"SET", marker, b"1")], "indexing actors")
    storage._index_ready = True


async def _index_server(storage: RedisStorage, node: object, pool: ConnectionPool) -> None:
    pattern = _scan_pattern(storage.prefix)
    head = len(storage.prefix.encode("utf-8")) + 2  # "prefix:{"
    cursor = b"0"
    while True:
        command = (b"SCAN", cursor, b"MATCH", pattern, b"COUNT", b"%d" % SCAN_COUNT)
        ((cursor, keys),) = await node_commands(storage, node, pool, [command], "indexing actors")
        found: list[tuple[bytes, bytes, bytes]] = []
        for key in keys:
            member = _member_of_tag(key[head:-3])
            if member is not None:  # else not an actor's data hash: nothing kelpie wrote
                slot = slot_of_key(key) if storage._per_slot else None
                found.append((key, store_key(storage.prefix, slot, b"a"), member))
        if found:
            await _index_actors(storage, node, pool, found)
        if cursor in (b"0", 0):
            return


def _member_of_tag(tag: bytes) -> bytes | None:
    """The index member of the actor whose hash tag is ``tag``, or ``None`` if none is."""
    try:
        return actor_member(actor_from_tag(tag))
    except ValueError:
        return None


async def _index_actors(
    storage: RedisStorage,
    node: object,
    pool: ConnectionPool,
    found: list[tuple[bytes, bytes, bytes]],
) -> None:
    """Index each ``(data key, actor index, member)`` whose data hash exists, atomically
    with the check."""
    action = "indexing actors"
    by_slot: dict[bytes, list[tuple[bytes, bytes, bytes]]] = {}
    for entry in found:
        by_slot.setdefault(entry[1], []).append(entry)
    if storage.commit_mode == "script":
        calls: list[bytes] = []
        for group in by_slot.values():
            pairs = [key for data, index, _ in group for key in (data, index)]
            members = [member for _, _, member in group]
            calls.append(script_call(INDEX_SCRIPT, False, pairs, members))
        request = Request(b"".join(calls), len(calls), False, action)
        replies = await storage._send_to(node, pool, request)
        refused = next((r for r in replies if refuses_scripting(r)), None)
        if refused is None or storage._per_slot:
            for reply in replies:
                if isinstance(reply, rex.ResponseError):
                    raise storage._translate(reply, action) from reply
            return
        fall_back_to_multi(storage, refused)
    for group in by_slot.values():
        await _index_watched(storage, group)


async def _index_watched(storage: RedisStorage, group: list[tuple[bytes, bytes, bytes]]) -> None:
    """``_index_actors`` without scripting: ``EXISTS`` under ``WATCH``, then ``MULTI``."""
    action = "indexing actors"

    async def attempt(conn: AbstractConnection) -> tuple[bytes, int] | None:
        try:
            present = await roundtrip(
                conn, pack([(b"EXISTS", data) for data, _, _ in group]), len(group)
            )
        except Exception as exc:
            raise storage._translate(exc, action) from exc
        commands: list[Command] = [(b"MULTI",)]
        commands += [
            (b"ZADD", index, b"0", member)
            for (_, index, member), there in zip(group, present, strict=True)
            if there == 1
        ]
        if len(commands) == 1:
            return None
        commands.append((b"EXEC",))
        return pack(commands), len(commands)

    watch = (b"WATCH", *(data for data, _, _ in group))
    replies = await watched(storage, f"{len(group)} actors", watch, attempt, action)
    if replies is not None:
        judge_block(storage, f"{len(group)} actors", replies)
