"""``ActorId`` lives in ``kelpie.identity``, below both ``kelpie.actor`` and
``kelpie.storage``; this module keeps the old import path working."""

from kelpie.identity import ActorId

__all__ = ["ActorId"]
