"""Actors: ``ActorId``, ``Actor``, ``ActorContext`` and the state codec."""

from kelpie.actor.actor import Actor
from kelpie.actor.codec import JsonCodec, StateCodec
from kelpie.actor.context import ActorContext
from kelpie.identity import ActorId

__all__ = ["Actor", "ActorContext", "ActorId", "JsonCodec", "StateCodec"]
