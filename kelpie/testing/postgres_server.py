"""A throwaway PostgreSQL server on a loopback port, for tests and benchmarks.

``PostgresServer()`` runs ``initdb`` and then ``postgres`` from Debian's
``/usr/lib/postgresql/<version>/bin`` (or ``PATH``) in a fresh temporary
directory, listening on ``127.0.0.1`` on a free port, with its unix socket in
that directory and ``fsync`` on. PostgreSQL refuses to run as root: as root the
server runs as the unprivileged user ``kelpie-pg`` (created with ``useradd`` if
missing, else ``nobody``), which owns the directory. The superuser ``kelpie``
logs in with a random password (scram-sha-256) over TCP, so URLs carry one.

``kill()`` SIGKILLs the postmaster and every server process at once (a crash:
the next ``start()`` runs crash recovery from the WAL); ``stop()`` is a fast
shutdown; ``restart()`` both on the same port and data. ``close()`` stops and
deletes the directory. Test-harness code: it may use the wall clock.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

from kelpie.testing.ports import free_port
from kelpie.testing.redis_server import signal_and_wait

__all__ = ["PostgresServer", "find_bin", "missing_postgres"]

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_SERVICE_USER = "kelpie-pg"
SUPERUSER = "kelpie"


def find_bin(name: str) -> str | None:
    """The newest ``/usr/lib/postgresql/*/bin/<name>``, else ``<name>`` on PATH."""

    def version(path: str) -> int:
        try:
            return int(Path(path).parts[-3])
        except ValueError:
            return 0

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version)
    if found:
        return found[-1]
    return shutil.which(name)


def missing_postgres() -> str | None:
    """Why no test server can start here (a skip reason), or ``None``."""
    if find_bin("initdb") is None or find_bin("postgres") is None:
        return "PostgreSQL is not installed (no initdb): apt-get install postgresql"
    return None


def _service_user() -> pwd.struct_passwd | None:
    """The account the server runs as: ``None`` when not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        pass
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             _SERVICE_USER],
            check=False, capture_output=True, timeout=30,
        )  # fmt: skip
    try:
        return pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        return pwd.getpwnam("nobody")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


class PostgresServer:
    """One PostgreSQL server on ``127.0.0.1:port`` with its data in a temporary directory."""

    def __init__(self, *, port: int | None = None, settings: dict[str, str] | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.password = secrets.token_urlsafe(12)
        self.settings = {
            "fsync": "on",
            "synchronous_commit": "on",
            "max_connections": "400",
            "shared_buffers": "64MB",
            "listen_addresses": "127.0.0.1",
            **(settings or {}),
        }
        self._user: pwd.struct_passwd | None = None  # chosen by the first start()
        self._directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._initialised = False

    # -- addresses ------------------------------------------------------------------

    def url(self, database: str = "postgres", **options: str) -> str:
        """``postgresql://kelpie:PASSWORD@127.0.0.1:PORT/database[?options]``."""
        query = "&".join(f"{name}={quote(value, safe='')}" for name, value in options.items())
        return (
            f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}"
            f"/{database}" + (f"?{query}" if query else "")
        )

    @property
    def connect_kwargs(self) -> dict[str, Any]:
        """asyncpg/psql-style connection arguments (TCP, with the password)."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": SUPERUSER,
            "password": self.password,
            "database": "postgres",
        }

    @property
    def directory(self) -> Path:
        """The server's temporary directory (data, socket, log), made on first need."""
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="kelpie-pg-"))
        return self._directory

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ------------------------------------------------------------------

    def _as_service(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        initdb = find_bin("initdb")
        if initdb is None:
            raise RuntimeError(missing_postgres())
        self._user = _service_user()
        if self._user is not None:
            os.chown(self.directory, self._user.pw_uid, self._user.pw_gid)
        self.directory.chmod(0o700)
        pwfile = self.directory / "pwfile"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if self._user is not None:
            os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
        try:
            result = subprocess.run(
                [initdb, "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                 "--locale=C", "--no-sync"],
                capture_output=True, timeout=120, cwd=self.directory, **self._as_service(),
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
            )
        self._initialised = True

    def _ready(self) -> bool:
        try:
            lines = (self.data / "postmaster.pid").read_text(encoding="ascii").splitlines()
        except OSError:
            return False
        # A killed server leaves its pid file ("ready") behind: only ours counts.
        process = self._process
        return (
            process is not None
            and len(lines) >= 8
            and lines[0].strip() == str(process.pid)
            and lines[7].strip() == "ready"
        )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """initdb (first time), spawn ``postgres`` and wait until it accepts connections."""
        if self.running:
            return
        if not self._initialised:
            self._initdb()
        binary = find_bin("postgres")
        assert binary is not None
        command = [binary, "-D", str(self.data), "-p", str(self.port), "-k", str(self.directory)]
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate()
        if self._user is not None:
            os.chown(self.log_path, self._user.pw_uid, self._user.pw_gid)
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,
            **self._as_service(),
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self._ready():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(
            f"postgres on 127.0.0.1:{self.port} did not start; log tail:\n{self._log_tail()}"
        )

    def _terminate(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            if sig == signal.SIGKILL:
                # Freeze the postmaster (no new children), then kill it and every child
                # at once: nothing gets to flush or clean up, as in a machine crash.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGSTOP)
                for child in _children(process.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
            signal_and_wait(process, sig, _STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        """Fast shutdown (SIGINT) and wait; does nothing if the server is not running."""
        self._terminate(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL the postmaster and all its processes: a crash; the WAL decides what survived."""
        self._terminate(signal.SIGKILL)

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or ``crash``: kill) and start again on the same port and data."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
            self._initialised = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"PostgresServer(127.0.0.1:{self.port}, {state})"
