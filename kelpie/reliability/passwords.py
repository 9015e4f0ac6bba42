"""Wrong passwords against a real Redis or PostgreSQL: a named error, and never a leak.

``password_leaks`` tries each wrong password (and the right one, and the right
one against a closed port): a wrong one must give ``ConfigError``, an
unreachable server ``StorageUnavailableError``; no message, ``repr`` or DEBUG
log line may contain a password. Moved out of ``kelpie.reliability.hostile``
(which re-exports these names) when that module grew past 600 lines.
"""

from __future__ import annotations

import logging
import random
import string
from urllib.parse import quote

from kelpie.errors import ConfigError, KelpieError, StorageUnavailableError
from kelpie.identity import ActorId
from kelpie.storage.protocol import Storage
from kelpie.storage.registry import open_storage

__all__ = ["chain_text", "open_redis_url", "password_leaks", "wrong_passwords"]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a record that cannot format is still searched by its args
            self.lines.append(f"{record.msg} {record.args}")


def chain_text(exc: BaseException | None) -> str:
    """The message and ``repr`` of ``exc`` and of every exception it was raised from."""
    parts: list[str] = []
    while exc is not None:
        parts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


async def password_leaks(
    port: int,
    right: str,
    wrong_passwords: list[str],
    *,
    down_port: int | None = None,
    scheme: str = "redis",
    user: str = "",
) -> tuple[int, list[str]]:
    """Try each wrong password (and the right one against ``down_port``, if given).

    ``scheme`` is ``redis`` or ``postgresql`` (database ``postgres``, as ``user``).
    Returns ``(inputs, violations)``: a wrong password must give ``ConfigError``
    and nothing written; no message, ``repr`` or DEBUG log line may contain a
    password, right or wrong.
    """
    violations: list[str] = []
    handler = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    inputs = 0
    try:
        attempts: list[tuple[str, int, type[KelpieError] | None]] = [
            (wrong, port, ConfigError) for wrong in wrong_passwords if wrong != right
        ]
        attempts.append((right, port, None))
        if down_port is not None:
            attempts.append((right, down_port, StorageUnavailableError))
        for password, target_port, expected in attempts:
            inputs += 1
            secret_part = f"{user}:{quote(password, safe='')}@127.0.0.1:{target_port}"
            if scheme == "redis":
                storage = open_redis_url(f"redis://{secret_part}/0")
            else:
                url = f"{scheme}://{secret_part}/postgres"
                storage = open_storage(url, connect_timeout=5.0, command_timeout=5.0)
            text = [repr(storage), str(storage)]
            exc: BaseException | None = None
            try:
                await storage.set(ActorId("pw", "a"), b"k", b"v")
            except Exception as caught:
                exc = caught
            finally:
                await storage.close()
            text.append(chain_text(exc))
            if expected is None and exc is not None:
                violations.append(f"the right password failed: {exc!r}")
            elif expected is not None and not isinstance(exc, expected):
                violations.append(f"expected {expected.__name__}, got {exc!r}")
            for secret in {password, quote(password, safe=""), right}:
                for line in text + handler.lines:
                    if secret in line:
                        violations.append(f"a password appears in: {line[:200]!r}")
                        break
            handler.lines.clear()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return inputs, violations


def open_redis_url(url: str) -> Storage:
    return open_storage(url, connect_timeout=2.0, socket_timeout=2.0)


_PASSWORD_ALPHABET = string.ascii_letters + string.digits + "!@#$%^&*()_+-=:/?[]{}~ "


def wrong_passwords(count: int, rng: random.Random) -> list[str]:
    """``count`` random passwords (6-40 characters, URL-hostile ones included)."""
    return [
        "Sx9" + "".join(rng.choice(_PASSWORD_ALPHABET) for _ in range(rng.randint(6, 40)))
        for _ in range(count)
    ]
