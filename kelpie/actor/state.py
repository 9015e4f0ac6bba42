"""Reading an actor's stored state at the version its class declares (ADR 0016).

``StateSchema`` joins an actor class (``state_type``, ``state_version``,
``migrate_state``) and a codec. A record at the class's version is decoded as
it is; an older one is decoded as a plain document, taken up one version at a
time by ``migrate_state`` and then validated as ``state_type``; a newer one
raises ``StateVersionTooNewError`` (the class would drop what it does not
know). The runtime's activations and ``kelpie migrate`` both read through it.
"""

from __future__ import annotations

from typing import Any

from kelpie.actor.actor import Actor
from kelpie.actor.codec import MAX_STATE_VERSION, JsonCodec, StateCodec, StateRecord
from kelpie.actor.typed import encode_value
from kelpie.errors import (
    ConfigError,
    CorruptStateError,
    SerializationError,
    StateVersionTooNewError,
)
from kelpie.identity import ActorId

__all__ = ["StateSchema"]


class StateSchema:
    """How one actor class's state is stored: its type, its version and the codec."""

    __slots__ = ("actor_cls", "codec", "state_type", "version")

    def __init__(self, actor_cls: type[Actor[Any]], codec: StateCodec) -> None:
        version = actor_cls.state_version
        if (
            isinstance(version, bool)
            or not isinstance(version, int)
            or not 1 <= version <= MAX_STATE_VERSION
        ):
            raise ConfigError(
                f"{actor_cls.__qualname__}.state_version must be an int from 1 to "
                f"{MAX_STATE_VERSION}, got {version!r}"
            )
        self.actor_cls = actor_cls
        self.codec = codec
        self.state_type: type[Any] = actor_cls.state_type
        self.version: int = version

    def parse(self, raw: bytes, actor_id: ActorId) -> StateRecord:
        """The envelope of a stored state record, written by this runtime's codec."""
        record = StateRecord.decode(raw, f"actor {actor_id}")
        if record.codec != self.codec.name:
            raise CorruptStateError(
                f"stored state of actor {actor_id} was written by codec "
                f"{record.codec!r}; this runtime uses {self.codec.name!r}"
            )
        return record

    def check_version(self, record: StateRecord, actor_id: ActorId) -> None:
        """Refuse a record written at a newer ``state_version`` than the class's."""
        if record.state_version > self.version:
            raise StateVersionTooNewError(
                f"stored state of actor {actor_id} is at state version {record.state_version}; "
                f"{self.actor_cls.__qualname__} declares state_version {self.version}. A newer "
                f"release wrote it: this node stores nothing for the actor (route it to a node "
                f"that runs the newer class)"
            )

    def decode(self, record: StateRecord, actor_id: ActorId) -> Any:
        """The state in ``record``, migrated to this class's version and validated.

        Bytes that do not match raise ``CorruptStateError`` naming the actor and
        the field path; a state type the codec cannot handle, ``SerializationError``.
        """
        self.check_version(record, actor_id)
        current = record.state_version == self.version
        try:
            if current:
                return self.codec.decode(record.payload, self.state_type)
            document = self.codec.decode(record.payload, dict)
        except SerializationError:
            raise
        except Exception as exc:
            raise self._corrupt(record, actor_id, exc) from exc
        for step in range(record.state_version, self.version):
            document = self._migrate(step, document, actor_id)
        try:
            payload = (
                encode_value(document)
                if isinstance(self.codec, JsonCodec)
                else self.codec.encode(document)
            )
        except SerializationError as exc:
            raise self._corrupt(record, actor_id, exc, migrated=True) from exc
        try:
            return self.codec.decode(payload, self.state_type)
        except SerializationError:
            raise
        except Exception as exc:
            raise self._corrupt(record, actor_id, exc, migrated=True) from exc

    def _corrupt(
        self, record: StateRecord, actor_id: ActorId, exc: Exception, *, migrated: bool = False
    ) -> CorruptStateError:
        name = getattr(self.state_type, "__name__", repr(self.state_type))
        how = (
            f"migrated from state version {record.state_version} to {self.version}"
            if migrated
            else f"at state version {record.state_version}"
        )
        return CorruptStateError(
            f"stored state of actor {actor_id} ({how}) cannot be loaded as {name}: {exc}"
        )

    def _migrate(self, step: int, document: Any, actor_id: ActorId) -> dict[str, Any]:
        qualname = self.actor_cls.__qualname__
        try:
            migrated = self.actor_cls.migrate_state(step, document)
        except Exception as exc:
            raise CorruptStateError(
                f"{qualname}.migrate_state({step}, ...) failed for actor {actor_id}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(migrated, dict):
            raise CorruptStateError(
                f"{qualname}.migrate_state({step}, ...) returned {type(migrated).__name__} "
                f"for actor {actor_id}; it must return a dict"
            )
        return migrated
