"""``ActorId``: the identity of a virtual actor."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

from kelpie.errors import InvalidActorIdError

__all__ = ["MAX_ID_PART_BYTES", "ActorId"]

MAX_ID_PART_BYTES = 128


def _checked_part(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise InvalidActorIdError(f"ActorId {name} must be a str, got {type(value).__name__}")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidActorIdError(f"ActorId {name} is not valid Unicode: {exc}") from exc
    if not encoded:
        raise InvalidActorIdError(f"ActorId {name} must not be empty")
    if len(encoded) > MAX_ID_PART_BYTES:
        raise InvalidActorIdError(
            f"ActorId {name} is {len(encoded)} UTF-8 bytes; the limit is {MAX_ID_PART_BYTES}"
        )
    return encoded


class _Derived:
    """Slots for what an ``ActorId`` derives from its parts: its encoding and hash.

    Not dataclass fields (``fields()``, ``asdict()``, pickling and comparisons
    see ``namespace`` and ``id`` only). The constructor fills both; ids built
    in bulk by a listing leave them empty, to be filled on first use.
    """

    __slots__ = ("_encoded", "_hash")
    _encoded: bytes
    _hash: int


@dataclass(frozen=True, order=True, slots=True, init=False)
class ActorId(_Derived):
    """An actor's identity: its type's ``namespace`` and its ``id`` within it.

    Both parts are non-empty strings of at most 128 UTF-8 bytes; any characters
    are allowed. Frozen, hashable and ordered (by namespace, then id).
    """

    namespace: str
    id: str

    def __init__(self, namespace: str, id: str) -> None:
        # The dataclass's own __init__ and a __post_init__ in one: handlers build ids on
        # every send. The common case in one test: ASCII str parts have as many UTF-8
        # bytes as characters. Anything else gets every check and its named error.
        if not (
            type(namespace) is str
            and type(id) is str
            and 0 < len(namespace) <= MAX_ID_PART_BYTES
            and 0 < len(id) <= MAX_ID_PART_BYTES
            and namespace.isascii()
            and id.isascii()
        ):
            _checked_part("namespace", namespace)
            _checked_part("id", id)
        setter = object.__setattr__  # frozen: the slots are set past __setattr__
        setter(self, "namespace", namespace)
        setter(self, "id", id)
        # Ids are dict keys on every invocation's path: hash once. The encoding
        # waits for its first use (``encode``): most ids built by handlers are
        # only looked up.
        setter(self, "_hash", hash((namespace, id)))

    def __eq__(self, other: object) -> bool:
        # What the dataclass would generate, with the cheap checks first: ids are
        # compared on every dict lookup whose key is an equal, different object.
        if self is other:
            return True
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, ActorId)
        return self.id == other.id and self.namespace == other.namespace

    def __hash__(self) -> int:
        try:
            return self._hash
        except AttributeError:  # built in bulk by a listing: hash on first use
            value = hash((self.namespace, self.id))
            object.__setattr__(self, "_hash", value)
            return value

    def __reduce__(self) -> tuple[type[ActorId], tuple[str, str]]:
        # Rebuilt through the constructor: str hashes differ between processes.
        return (ActorId, (self.namespace, self.id))

    def encode(self) -> bytes:
        """An injective, self-delimiting byte encoding of this id.

        One length byte and the UTF-8 bytes of each part: no two ids share an
        encoding, and no encoding is a prefix of another's (ADR 0001).
        """
        try:
            return self._encoded
        except AttributeError:  # encoded on first use
            ns, ident = self.namespace.encode(), self.id.encode()
            value = bytes((len(ns),)) + ns + bytes((len(ident),)) + ident
            object.__setattr__(self, "_encoded", value)
            return value

    @classmethod
    def decode(cls, encoded: bytes) -> ActorId:
        """The ``ActorId`` whose ``encode()`` is ``encoded`` (a stored id read back).

        Checks what the constructor checks -- both parts non-empty, at most
        128 UTF-8 bytes, valid UTF-8 -- but skips re-encoding them: listings
        rebuild many ids from stored keys. ``InvalidActorIdError`` otherwise.
        """
        try:
            ns_end = 1 + encoded[0]
            id_start = ns_end + 1
            if not (
                1 < ns_end <= MAX_ID_PART_BYTES + 1
                and 0 < encoded[ns_end] <= MAX_ID_PART_BYTES
                and len(encoded) == id_start + encoded[ns_end]
            ):
                raise ValueError("bad lengths")
            namespace = encoded[1:ns_end].decode()
            ident = encoded[id_start:].decode()
        except (IndexError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise InvalidActorIdError(f"{encoded!r} is not an encoded ActorId: {exc}") from exc
        actor = object.__new__(cls)
        set_field = object.__setattr__
        set_field(actor, "namespace", namespace)
        set_field(actor, "id", ident)
        set_field(actor, "_encoded", bytes(encoded))
        set_field(actor, "_hash", hash((namespace, ident)))
        return actor

    @classmethod
    def _trusted_many(cls, namespace: str, ids: Sequence[str]) -> list[ActorId]:
        """``ActorId(namespace, ids[i])`` for each ``i``, built in bulk.

        For listings only, which rebuild many ids of one namespace from a
        store's own, already checked encoding: nothing is validated here (the
        caller guarantees the parts are valid), and the loop runs in C (``map``
        over the slot setters), with no Python frame per id. The encoding and
        hash are left to first use (most listed ids are printed or compared,
        never hashed). The ids are indistinguishable from constructed ones.
        """
        count = len(ids)
        actors = list(map(object.__new__, repeat(cls, count)))
        deque(map(_SET_NAMESPACE, actors, repeat(namespace, count)), maxlen=0)
        deque(map(_SET_ID, actors, ids), maxlen=0)
        return actors

    @classmethod
    def _decode_many(cls, namespace: bytes, ids: Sequence[bytes]) -> list[ActorId]:
        """The ids of one namespace from the UTF-8 bytes of each part, checked in bulk.

        For listings that read the parts from a store: the same checks as the
        constructor (non-empty, at most 128 bytes, valid UTF-8) in a few passes
        in C, then ``_trusted_many``. ``InvalidActorIdError`` if any fails.
        """
        if not ids:
            return []
        lengths = list(map(len, ids))
        if not 0 < len(namespace) <= MAX_ID_PART_BYTES:
            raise InvalidActorIdError(f"namespace {namespace!r} is empty or too long")
        if min(lengths) == 0 or max(lengths) > MAX_ID_PART_BYTES:
            raise InvalidActorIdError(f"an id of namespace {namespace!r} is empty or too long")
        try:
            return cls._trusted_many(namespace.decode(), list(map(bytes.decode, ids)))
        except UnicodeDecodeError as exc:
            raise InvalidActorIdError(f"an actor id part is not valid UTF-8: {exc}") from exc

    def __str__(self) -> str:
        return f"{self.namespace}/{self.id}"


# The slots' own setters: they bypass the frozen ``__setattr__`` (``_trusted_many``).
_SET_NAMESPACE = ActorId.__dict__["namespace"].__set__
_SET_ID = ActorId.__dict__["id"].__set__
