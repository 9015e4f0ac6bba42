"""Actors that talk: transactional messages (``ctx.send``), reminders, reentrancy checks.

See ``docs/messaging.md`` and ADR 0018.
"""
