"""Sequential models of the built-in workloads' actors, for the history checker.

Each model is a ``kelpie.dst.linearizability.Model``: ``step(state, input,
output)`` returns the next state if ``output`` is exactly what the operation
returns in ``state`` (any output when it is ``UNKNOWN``), else ``None``. The
recorder builds inputs with ``input_of(operation, payload)`` from the frozen
payload (dicts are sorted ``(key, value)`` tuples), so each step is a few
tuple lookups.

``LedgerModel``: state = the balance. ``apply {op, delta}`` returns the new
balance, or is rejected with ``("error", "InsufficientFundsError")`` when it
would go below zero (state unchanged); ``balance`` returns it.

``RegisterModel``: state = ``(value, writes, kv)``, ``kv`` the sorted
``(key, value)`` pairs of the actor's KV (``"v"`` holds ``str(value)`` once
written). Every output is decided exactly, see ``kelpie.dst.workloads.registers``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Final

from kelpie.dst.linearizability import UNKNOWN

__all__ = ["LedgerModel", "RegisterModel"]

INSUFFICIENT: Final = ("error", "InsufficientFundsError")
REGISTER_FAILURE: Final = ("error", "RegisterFailure")


def _field(payload: Hashable, name: str) -> Any:
    """A field of a frozen dict payload (a tuple of sorted ``(key, value)`` pairs)."""
    if type(payload) is tuple:
        for key, value in payload:
            if key == name:
                return value
    return None


class LedgerModel:
    """One ledger account: its balance."""

    def input_of(self, operation: str, payload: Hashable) -> Hashable:
        if operation == "apply":
            return ("apply", _field(payload, "op"), int(_field(payload, "delta")))
        if operation == "balance":
            return ("balance",)
        return (operation, payload)

    def init(self) -> Hashable:
        return 0

    def step(self, state: Hashable, input: Hashable, output: Hashable) -> Hashable | None:
        balance: Any = state
        op: Any = input
        kind = op[0]
        if kind == "apply":
            new = balance + op[2]
            if new < 0:
                return balance if output is UNKNOWN or output == INSUFFICIENT else None
            return new if output is UNKNOWN or output == new else None
        if kind == "balance":
            return balance if output is UNKNOWN or output == balance else None
        return None

    def describe(self, input: Hashable, output: Hashable) -> str:
        fields: Any = input
        if fields[0] == "apply":
            _, op, delta = fields
            return f"apply {op} {delta:+d} -> {output!r}"
        if fields[0] == "balance":
            return f"balance -> {output!r}"
        return f"{input!r} -> {output!r}"


# The register's state: (value, writes, kv items sorted by key).
RegisterState = tuple[int, int, tuple[tuple[str, str], ...]]


def _kv_int(kv: tuple[tuple[str, str], ...]) -> int | None:
    for key, value in kv:
        if key == "v":
            return int(value)
    return None


def _listed(kv: tuple[tuple[str, str], ...], prefix: str) -> tuple[str, ...]:
    """The keys of sorted ``kv`` items under ``prefix`` (already in order)."""
    return tuple([key for key, _ in kv if key.startswith(prefix)])


class RegisterModel:
    """A register actor (``kelpie.dst.workloads.registers.Register``)."""

    def input_of(self, operation: str, payload: Hashable) -> Hashable:
        if operation == "write":
            return ("write", int(_field(payload, "v")))
        if operation in ("peek", "snapshot"):
            return (operation,)
        if operation == "put_read":
            puts = _field(payload, "puts")
            return ("put_read", puts, _field(payload, "drop"), _field(payload, "prefix"))
        if operation in ("delete", "blind_delete"):
            return (operation, _field(payload, "key"))
        if operation == "list":
            return ("list", _field(payload, "prefix"))
        if operation == "fail":
            return ("fail",)
        return (operation, payload)

    def init(self) -> Hashable:
        return (0, 0, ())

    def step(self, state: Hashable, input: Hashable, output: Hashable) -> Hashable | None:
        st: Any = state
        op: Any = input
        value, writes, kv = st
        kind = op[0]
        expected: Hashable
        if kind == "peek":
            expected = (value, _kv_int(kv), writes)
            return state if output is UNKNOWN or output == expected else None
        if kind == "write":
            expected = (value, _kv_int(kv), writes)
            if output is not UNKNOWN and output != expected:
                return None
            new = op[1]
            items = dict(kv)
            items["v"] = str(new)
            return (new, writes + 1, tuple(sorted(items.items())))
        if kind == "list":
            expected = _listed(kv, op[1])
            return state if output is UNKNOWN or output == expected else None
        if kind == "delete":
            key = op[1]
            items = dict(kv)
            existed = items.pop(key, None) is not None
            if output is not UNKNOWN and output != existed:
                return None
            return (value, writes, tuple(sorted(items.items())))
        if kind == "blind_delete":
            if output is not UNKNOWN and output is not None:
                return None
            items = dict(kv)
            items.pop(op[1], None)
            return (value, writes, tuple(sorted(items.items())))
        if kind == "put_read":
            _, puts, drop, prefix = op
            items = dict(kv)
            items.update(puts)
            if drop is not None:
                items.pop(drop, None)
            after = tuple(sorted(items.items()))
            if output is not UNKNOWN:
                expected = (tuple([items.get(key) for key, _ in puts]), _listed(after, prefix))
                if output != expected:
                    return None
            return (value, writes, after)
        if kind == "fail":
            return state if output is UNKNOWN or output == REGISTER_FAILURE else None
        if kind == "snapshot":
            return state if output is UNKNOWN or output == state else None
        return None

    def describe(self, input: Hashable, output: Hashable) -> str:
        op: Any = input
        kind = op[0]
        shown = "UNKNOWN" if output is UNKNOWN else repr(output)
        if kind == "write":
            return f"write {op[1]} -> previous (value, kv v, writes) {shown}"
        if kind == "peek":
            return f"peek -> (value, kv v, writes) {shown}"
        if kind == "put_read":
            _, puts, drop, prefix = op
            return f"put_read {dict(puts)} drop {drop!r} list {prefix!r} -> (read, listed) {shown}"
        if kind in ("delete", "blind_delete", "list"):
            return f"{kind} {op[1]!r} -> {shown}"
        return f"{kind} -> {shown}"
