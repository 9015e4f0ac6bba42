"""A throwaway ``redis-server`` on a loopback port, for tests and benchmarks.

``RedisServer(tmp_path)`` runs ``/usr/bin/redis-server`` (whatever ``PATH``
finds) bound to 127.0.0.1 with its files in ``directory``; ``kill`` and
``restart`` let a test take the server away and bring it back on the same port
and data directory. This is test-harness code: it may use the wall clock.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import quote

from kelpie.testing.ports import free_port

__all__ = ["RedisServer", "signal_and_wait"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


def signal_and_wait(process: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Send ``sig`` to a server process and wait; SIGKILL it if it outlives ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port`` with its data in ``directory``.

    ``appendonly``/``appendfsync`` choose the durability mode (RDB snapshots are
    always off); ``password`` sets ``requirepass``; ``unix_socket`` also listens
    on ``unix_socket_path``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        password: str | None = None,
        unix_socket: bool = False,
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, got {appendfsync!r}")
        self.directory = Path(directory)
        self.port = port if port is not None else free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self.unix_socket = unix_socket
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:{port}/0``, with ``:password@`` when one is set."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def unix_socket_path(self) -> Path:
        """Where the server listens when started with ``unix_socket=True``."""
        return self.directory / f"redis-{self.port}.sock"

    @property
    def unix_url(self) -> str:
        """``unix:///…/redis-{port}.sock?db=0`` (only served with ``unix_socket=True``)."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"unix://{auth}{self.unix_socket_path}?db=0"

    @property
    def log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        command = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", "",
        ]  # fmt: skip
        if self.password is not None:
            command += ["--requirepass", self.password]
        if self.unix_socket:
            command += ["--unixsocket", str(self.unix_socket_path), "--unixsocketperm", "700"]
        return command

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                request = b"PING\r\n"
                if self.password is not None:
                    request = _pack(b"AUTH", self.password.encode()) + request
                sock.sendall(request)
                received = b""
                while b"PONG" not in received and b"-" not in received[:1]:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    received += chunk
                return b"PONG" in received
        except OSError:
            return False

    def start(self) -> None:
        """Spawn the server and wait (at most 10 s) until it answers PING."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        self._process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self._answers_ping():
                return
            time.sleep(0.02)
        self._terminate(signal.SIGKILL)
        raise RuntimeError(
            f"redis-server on 127.0.0.1:{self.port} did not start; log tail:\n{self._log_tail()}"
        )

    def _terminate(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            signal_and_wait(process, sig, _STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """SIGTERM and wait; does nothing if the server is not running."""
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and wait: a crash, nothing flushed beyond what the server already had."""
        self._terminate(signal.SIGKILL)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port and directory."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisServer(127.0.0.1:{self.port}, {state})"


def _pack(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)
