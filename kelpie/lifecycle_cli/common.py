"""What the lifecycle commands share: URLs, ``NS/ID``, safe bytes, errors, progress.

An actor on the command line is ``NAMESPACE/ID``, split at the *first* ``/``:
``account/eu/alice`` is namespace ``account``, id ``eu/alice``. A namespace
that itself contains ``/`` (or any id at all) can be given as JSON instead,
the same object ``kelpie actors --json`` prints: ``{"namespace": "a/b", "id": "c"}``
(or a two-element array ``["a/b", "c"]``).

Bytes are printed safely: as text when they are UTF-8 without control
characters, else as a Python bytes literal (``b'\\x00\\xff'``), so no stored
value can move the cursor or recolour a terminal. ``--json`` output carries
the exact bytes in hex as well.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Coroutine
from typing import Any, TextIO

from kelpie.errors import ConfigError, InvalidActorIdError, KelpieError
from kelpie.identity import ActorId
from kelpie.storage.protocol import Storage
from kelpie.storage.registry import open_storage
from kelpie.storage.url import StorageURL

__all__ = [
    "CommandError",
    "Progress",
    "actor_json",
    "actor_text",
    "bytes_json",
    "open_url",
    "parse_actor",
    "printable",
    "run_command",
    "safe_url",
]

USAGE = 2
"""Exit status for a bad URL, actor id or option."""
FAILED = 1
"""Exit status for a command that ran and failed."""


class CommandError(Exception):
    """A one-line message for the user, and the exit status to end with."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        return StorageURL.parse(url).render()
    except ValueError:
        return "<unparsable storage URL>"


def open_url(url: str) -> Storage:
    """Open ``url`` (no I/O yet); a bad URL is a ``CommandError`` naming it (without password)."""
    try:
        return open_storage(url)
    except (ConfigError, ValueError) as exc:
        raise CommandError(f"cannot open {safe_url(url)}: {exc}", USAGE) from exc


def parse_actor(text: str) -> ActorId:
    """``NS/ID`` (split at the first ``/``), or the JSON forms; see the module docstring."""
    stripped = text.strip()
    try:
        if stripped.startswith(("{", "[")):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise CommandError(f"actor {text!r} is not valid JSON: {exc}", USAGE) from exc
            if isinstance(value, dict) and set(value) == {"namespace", "id"}:
                namespace, actor = value["namespace"], value["id"]
            elif isinstance(value, list) and len(value) == 2:
                namespace, actor = value
            else:
                raise CommandError(
                    f'actor {text!r}: expected {{"namespace": ..., "id": ...}} or [NS, ID]', USAGE
                )
            if not isinstance(namespace, str) or not isinstance(actor, str):
                raise CommandError(f"actor {text!r}: namespace and id must be strings", USAGE)
            return ActorId(namespace, actor)
        namespace, slash, actor = text.partition("/")
        if not slash:
            raise CommandError(
                f"actor {text!r} has no '/': write NAMESPACE/ID "
                '(or {"namespace": ..., "id": ...} as JSON)',
                USAGE,
            )
        return ActorId(namespace, actor)
    except InvalidActorIdError as exc:
        raise CommandError(f"actor {text!r}: {exc}", USAGE) from exc


def printable(data: bytes) -> str:
    """UTF-8 text without control characters as is; anything else as a bytes literal."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return repr(data)
    return text if text.isprintable() and not text.startswith(("b'", 'b"')) else repr(data)


def bytes_json(data: bytes) -> dict[str, Any]:
    """``{"text": ..., "hex": ...}``: the text when it is valid UTF-8 (else null), and the hex."""
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"text": text, "hex": data.hex()}


def actor_text(actor: ActorId) -> str:
    """``NS/ID`` when that reads back as the same actor, else its JSON form; printable."""
    if "/" not in actor.namespace and actor.namespace.isprintable() and actor.id.isprintable():
        return f"{actor.namespace}/{actor.id}"
    return json.dumps(actor_json(actor))


def actor_json(actor: ActorId) -> dict[str, str]:
    return {"namespace": actor.namespace, "id": actor.id}


def _one_line(message: str) -> str:
    return " ".join(message.split()) or "failed"


def run_command(name: str, command: Coroutine[Any, Any, int]) -> int:
    """Run ``command``; print any failure as one line on stderr; return the exit status."""
    try:
        return asyncio.run(command)
    except CommandError as exc:
        print(f"kelpie {name}: {_one_line(str(exc))}", file=sys.stderr)
        return exc.code
    except (ConfigError, InvalidActorIdError) as exc:
        print(f"kelpie {name}: {_one_line(str(exc))}", file=sys.stderr)
        return USAGE
    except KelpieError as exc:
        print(f"kelpie {name}: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print(f"kelpie {name}: interrupted", file=sys.stderr)
        return 130


class Progress:
    """``copied 1,234 actors (850/s)`` on stderr: redrawn on a terminal, a line a while otherwise.

    The total is not known in advance (listing a store to count it would cost
    as much as the copy's own listing), so it shows the count and the rate.
    This is command-line code: it reads the clock.
    """

    def __init__(self, verb: str, *, stream: TextIO | None = None, every: float = 5.0) -> None:
        self.verb = verb
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.count = 0
        self._started = time.perf_counter()
        self._shown = self._started
        self._every = 0.25 if self.tty else every

    def _text(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        return f"{self.verb} {self.count:,} actors ({self.count / elapsed:,.0f}/s)"

    def add(self, n: int = 1) -> None:
        self.count += n
        now = time.perf_counter()
        if now - self._shown >= self._every:
            self._shown = now
            if self.tty:
                self.stream.write("\r\x1b[K" + self._text(now))
            else:
                self.stream.write(self._text(now) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
