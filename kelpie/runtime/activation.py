"""One actor's life in memory: load, run invocations one at a time, deactivate.

Every piece of work on an actor — ``on_activate``, a handler, ``on_deactivate``
— runs through ``Activation.execute``: one storage transaction that first
re-reads the state record to check nobody else committed since this
activation loaded it (the fence), then lets the body read and buffer writes,
then writes the state, the buffered KV and the idempotency record, and commits.
A call whose idempotency key already has a record is answered from it (or
refused, if the record was written by another call) before the body runs.
On any failure the in-memory state is rebuilt from the last committed bytes,
so memory and storage agree; on a storage failure the activation is dropped
and reloads before its next invocation (ADR 0005).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kelpie.actor.actor import Actor, overrides_hook
from kelpie.actor.codec import StateCodec, StateRecord, encode_json, pack_record
from kelpie.actor.context import ActorContext
from kelpie.actor.keys import STATE_KEY, idempotency_slot_key
from kelpie.actor.state import StateSchema
from kelpie.errors import (
    ActorActiveElsewhereError,
    InvocationTimeoutError,
    KelpieError,
    StorageError,
    TransactionConflictError,
)
from kelpie.identity import ActorId
from kelpie.runtime.deadline import within
from kelpie.runtime.idempotency import Idempotency
from kelpie.runtime.lease import Leases, stored_lease
from kelpie.storage.protocol import Storage, Transaction

if TYPE_CHECKING:
    from kelpie.messaging.calls import Special
    from kelpie.messaging.service import Services, Staged

__all__ = ["IDEMPOTENCY_WINDOW", "Activation"]

log = logging.getLogger("kelpie.runtime")

IDEMPOTENCY_WINDOW = 1000
"""How many of an actor's most recent idempotency keys are remembered (the default)."""

Body = Callable[[ActorContext[Any]], Awaitable[Any]]


@dataclass(slots=True)
class _Loaded:
    state: Any
    state_bytes: bytes
    seq: int
    idempotency_count: int
    owner: str
    record: bytes | None
    """The stored state record as last read or written (``None``: none stored)."""
    version: int
    """The state version of the stored record (migrated on load, rewritten on commit)."""
    marks: dict[bytes, int] = field(default_factory=dict)
    """High-water marks (sender tag -> seq) as stored with ``record`` (ADR 0020): the
    fence makes them as current as the state; kelpie.messaging reads and adds them."""


async def _nothing(ctx: ActorContext[Any]) -> None:
    return None


class Activation:
    """An actor instance, its state as last committed, and its commit fence."""

    # Slots: one per active actor, touched by every invocation (compact, no __dict__).
    __slots__ = (
        "_codec",
        "_leases",
        "_loaded",
        "_loop",
        "_retryable",
        "_schema",
        "_storage",
        "_timeout",
        "_version",
        "_window",
        "actor",
        "actor_cls",
        "actor_id",
        "committed_at",
        "services",
    )

    def __init__(
        self,
        actor_id: ActorId,
        actor_cls: type[Actor[Any]],
        storage: Storage,
        codec: StateCodec,
        timeout: float,
        leases: Leases | None = None,
        idempotency_window: int = IDEMPOTENCY_WINDOW,
    ) -> None:
        self.actor_id = actor_id
        self.actor_cls = actor_cls
        self.actor = actor_cls()
        self._storage = storage
        self._codec = codec
        self._schema = StateSchema(actor_cls, codec)
        self._version = self._schema.version
        self._timeout = timeout
        self._leases = leases
        self._window = idempotency_window
        self._loaded: _Loaded | None = None
        self._loop = asyncio.get_running_loop()
        self.committed_at = 0.0
        """Loop time of this activation's last commit (or load)."""
        self._retryable: BaseException | None = None
        """The last conflict of this activation's own transaction outside a body."""
        self.services: Services | None = None
        """The runtime's messaging and reminders (``kelpie.messaging``), set by the runtime."""

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def may_retry(self, exc: BaseException) -> bool:
        """Did ``exc`` come from a conflict that left nothing stored and this activation dropped?

        True only for a ``TransactionConflictError`` raised by the transaction
        of ``execute`` outside the body: the fence, the idempotency reads, the
        commit (or a read-only commit's validation). A body's own exceptions,
        even conflicts it got from elsewhere, are never retryable.
        """
        retryable, self._retryable = self._retryable, None
        return exc is retryable and self._loaded is None

    def drop(self) -> None:
        """Forget the in-memory state; the next invocation reloads it from storage."""
        self._loaded = None

    # -- loading --------------------------------------------------------------

    def _parse_record(self, raw: bytes) -> StateRecord:
        return self._schema.parse(raw, self.actor_id)

    async def load(self) -> None:
        """Read the state record; a read error or undecodable state fails the load.

        Where another live node holds the lease, ``ActorActiveElsewhereError``
        comes first; then a record newer than the class raises
        ``StateVersionTooNewError`` and an older one is migrated (ADR 0016).
        """
        if self.services is not None:
            self.services.forget(self.actor_id)  # what it knew of the last activation's outbox
        raw = await self._storage.get(self.actor_id, STATE_KEY)
        leases = self._leases
        if raw is None:
            if leases is not None:
                leases.may_take(self.actor_id, "", 0)  # forget any lease seen before
            state = self.actor_cls.state_type()
            loaded = _Loaded(state, self._codec.encode(state), 0, 0, "", None, self._version)
        else:
            record = self._parse_record(raw)
            owner = record.owner
            if (
                leases is not None
                and owner != leases.node_id
                and not leases.may_take(self.actor_id, owner, record.seq)
            ):
                raise ActorActiveElsewhereError(
                    f"actor {self.actor_id} is active on node {owner!r}", owner=owner
                )
            state = self._schema.decode(record, self.actor_id)
            # The canonical bytes of what was loaded, so an untouched state is not rewritten.
            loaded = _Loaded(
                state,
                self._codec.encode(state),
                record.seq,
                record.idempotency_count,
                owner,
                raw,
                record.state_version,
            )
        self._loaded = loaded
        self.committed_at = asyncio.get_running_loop().time()
        if leases is not None and loaded.owner != leases.node_id:
            # may_take() said yes above (or the lease was free): take it.
            try:
                await self.execute(_nothing, owner=leases.node_id)
            except TransactionConflictError as exc:
                self._loaded = None
                await self._held_elsewhere(leases, loaded, exc)
                raise
            except BaseException:
                self._loaded = None
                raise
        if overrides_hook(self.actor_cls, "on_activate"):
            try:
                await self.execute(self.actor.on_activate)
            except BaseException:
                self._loaded = None
                raise

    async def _held_elsewhere(
        self, leases: Leases, read: _Loaded, conflict: TransactionConflictError
    ) -> None:
        """A takeover lost a race: raise ``ActorActiveElsewhereError`` if a node holds it now.

        A commit landed between the read that found the lease free or expired
        (``read``) and the commit that took it: the owner renewed late (its
        loop was busy), or another node took the actor first. Either way the
        caller is best told who holds it, as a load a moment later would tell
        it, and this node starts watching that lease afresh. A conflict that
        left the lease as it was read is raised as it is.
        """
        owner, seq = await stored_lease(self._storage, self.actor_id)
        if owner in ("", leases.node_id) or (owner, seq) == (read.owner, read.seq):
            return
        leases.may_take(self.actor_id, owner, seq)  # a new sighting: the watch restarts
        raise ActorActiveElsewhereError(
            f"actor {self.actor_id} is active on node {owner!r}", owner=owner
        ) from conflict

    # -- the commit path --------------------------------------------------------

    async def execute(
        self,
        body: Body,
        idempotency: Idempotency | None = None,
        *,
        owner: str | None = None,
        force: bool = False,
    ) -> Any:
        """Run ``body`` in one transaction with the state; see the module docstring.

        ``owner`` (if given) is the lease owner to write; the commit happens
        even if nothing else changed when the owner changes or ``force`` is set.
        """
        loaded = self._loaded
        assert loaded is not None, "execute() on an activation that is not loaded"
        new_owner = loaded.owner if owner is None else owner
        txn = self._storage.transaction(self.actor_id)
        ctx: ActorContext[Any] = ActorContext(self.actor_id, loaded.state, txn)
        ctx._marks = loaded.marks
        ended = False  # commit() or abort() was called: the transaction is over
        in_body = False
        self._retryable = None
        try:
            raw = await txn.get(STATE_KEY)
            # Every change of the record bumps seq, the lease owner included; but
            # seq alone repeats when the actor was deleted and re-created with as
            # many commits, so the fence is the record's bytes: what this
            # activation last read or wrote, or it reloads.
            if raw != loaded.record:
                stored_seq = 0 if raw is None else self._parse_record(raw).seq
                raise TransactionConflictError(
                    f"actor {self.actor_id} was committed elsewhere since it was loaded "
                    f"(stored seq {stored_seq}, loaded {loaded.seq}); it will reload"
                )
            if idempotency is not None:
                previous = await txn.get(idempotency.record_key)
                if previous is not None:
                    ended = True
                    await txn.abort()
                    return idempotency.replay(self.actor_id, previous)
            in_body = True
            try:
                result = await within(self._timeout, body(ctx))
            except TimeoutError as exc:
                raise InvocationTimeoutError(
                    f"invocation of actor {self.actor_id} ran past {self._timeout} s"
                ) from exc
            in_body = False
            result_bytes = encode_json(result, "result")
            state_bytes = self._codec.encode(ctx.state)
            unchanged = (
                state_bytes == loaded.state_bytes
                and new_owner == loaded.owner
                and loaded.version == self._version
            )
            effects = ctx.effects  # ctx.send / set_reminder / cancel_reminder (kelpie.messaging)
            if unchanged and not (
                ctx.wrote or force or idempotency is not None or effects is not None
            ):
                ended = True
                if ctx.read:
                    # The handler read KV after the fence read the state: commit()
                    # of a read-only transaction checks that nothing landed since,
                    # so state and KV come from one committed version (guarantee 5).
                    await txn.commit()
                else:
                    await txn.abort()  # the state alone: one version, at the fence read
                return result
            count = loaded.idempotency_count
            if idempotency is not None:
                record_key = idempotency.record_key
                slot = idempotency_slot_key(count % self._window)
                evicted = await txn.get(slot)
                if evicted is not None:
                    await txn.delete(evicted)
                await txn.set(slot, record_key)
                await txn.set(record_key, idempotency.pack(result_bytes))
                count += 1
            staged: Staged | None = None
            if effects is not None:
                if self.services is None:
                    raise RuntimeError("ctx.send and reminders need a kelpie Runtime")
                staged = await self.services.stage(effects, txn, self.actor_id, loaded.seq + 1)
            record_bytes = pack_record(
                loaded.seq + 1, count, self._codec.name, state_bytes, new_owner, self._version
            )
            await txn.set(STATE_KEY, record_bytes)
            ended = True
            await txn.commit()
        except BaseException as exc:
            if not ended:
                await self._abort_quietly(txn)
            if isinstance(exc, StorageError):
                self._loaded = None
                if isinstance(exc, TransactionConflictError) and not in_body:
                    self._retryable = exc
            else:
                self._restore(loaded)
            raise
        marks = loaded.marks
        if ctx._new_marks is not None:
            marks.update(ctx._new_marks)
        self._loaded = _Loaded(
            ctx.state,
            state_bytes,
            loaded.seq + 1,
            count,
            new_owner,
            record_bytes,
            self._version,
            marks,
        )
        self.committed_at = self._loop.time()
        if staged is not None:
            assert self.services is not None
            self.services.committed(staged)
        return result

    async def _abort_quietly(self, txn: Transaction) -> None:
        try:
            await txn.abort()
        except Exception:
            # The transaction is abandoned either way; the original error matters.
            log.debug("abort of a failed transaction on %s failed", self.actor_id, exc_info=True)

    def _restore(self, loaded: _Loaded) -> None:
        """Put back the state as last committed (the handler may have changed it)."""
        try:
            loaded.state = self._codec.decode(loaded.state_bytes, self.actor_cls.state_type)
        except Exception:  # pragma: no cover - these bytes decoded or encoded before
            log.exception("cannot restore the state of %s; it will reload", self.actor_id)
            self._loaded = None

    async def invoke(
        self,
        operation: str,
        payload: Any,
        idempotency: Idempotency | None,
        special: Special | None = None,
    ) -> Any:
        if special is not None:  # the runtime's own call (kelpie.messaging.calls)
            actor = self.actor
            return await self.execute(lambda ctx: special(actor, ctx))
        handler = getattr(self.actor, operation)
        return await self.execute(lambda ctx: handler(ctx, payload), idempotency)

    def holds_lease(self) -> bool:
        loaded = self._loaded
        return (
            loaded is not None and self._leases is not None and loaded.owner == self._leases.node_id
        )

    async def renew(self) -> None:
        """Renew this node's lease with an otherwise empty commit."""
        if self.holds_lease():
            await self.execute(_nothing, force=True)

    async def deactivate(self) -> None:
        """Run ``on_deactivate`` and release the lease in one commit, then forget."""
        if self._loaded is None:
            return
        hook = overrides_hook(self.actor_cls, "on_deactivate")
        release = self.holds_lease()
        try:
            if hook or release:
                body = self.actor.on_deactivate if hook else _nothing
                await self.execute(body, owner="" if release else None)
        except KelpieError:
            log.warning("on_deactivate of %s failed to commit", self.actor_id, exc_info=True)
            raise
        finally:
            self._loaded = None
            if self.services is not None:
                # What it cached of its outbox is this activation's alone (messages still
                # in flight are delivery's, not the cache's): a runtime that activates
                # many actors over time must not keep one cache per actor it ever ran.
                self.services.forget(self.actor_id)
