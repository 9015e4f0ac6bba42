"""Actors: ``ActorId``, ``Actor``, ``ActorContext`` and the state codec."""

from kelpie.actor.id import ActorId

__all__ = ["ActorId"]
