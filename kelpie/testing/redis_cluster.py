"""A throwaway Redis Cluster on loopback (3 masters + 3 replicas), for tests and demos.

``RedisCluster(tmp_path)`` starts one ``redis-server --cluster-enabled yes``
per node on free loopback ports (each with its bus port ``port + 10000`` free
too), joins them with ``redis-cli --cluster create ... --cluster-replicas 1``
and waits until every node reports ``cluster_state:ok`` and every replica is in
sync. ``kill``/``pause``/``resume`` act on one node; ``wait_for_failover``
waits until a replica serves the slots a dead master had. This is
test-harness code: it may use the wall clock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from kelpie.testing.ports import free_ports
from kelpie.testing.redis_server import RedisServer

__all__ = ["ClusterNode", "RedisCluster", "cluster_command", "key_slot", "wait_replicated"]

_READY_TIMEOUT = 60.0
_BUS_OFFSET = 10000


def key_slot(key: bytes) -> int:
    """The hash slot of ``key`` (CRC16 of its hash tag, mod 16384)."""
    from redis.crc import key_slot as _slot

    return int(_slot(key))


def _encode(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def cluster_command(port: int, *args: str, timeout: float = 2.0) -> str:
    """Send one command to ``127.0.0.1:port``; return a simple/bulk reply as text.

    Integer replies come back as their decimal text; arrays are not supported
    (use a command that answers with a bulk string, such as ``CLUSTER NODES``).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_encode(*(a.encode() for a in args)))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"127.0.0.1:{port} closed the connection")
            data += chunk
            kind = data[:1]
            if kind in b"+-:" and data.endswith(b"\r\n"):
                text = data[1:-2].decode()
                if kind == b"-":
                    raise RuntimeError(f"127.0.0.1:{port} answered {text}")
                return text
            if kind == b"$" and b"\r\n" in data:
                header, _, rest = data.partition(b"\r\n")
                length = int(header[1:])
                if length < 0:
                    return ""
                if len(rest) >= length + 2:
                    return rest[:length].decode()


class ClusterNode(RedisServer):
    """One ``redis-server`` of the cluster (``--cluster-enabled yes``)."""

    def __init__(self, directory: Path, port: int, *, node_timeout_ms: int) -> None:
        super().__init__(directory, port=port)
        self.node_timeout_ms = node_timeout_ms
        self.paused = False

    def _command(self) -> list[str]:
        return [
            *super()._command(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.directory / f"nodes-{self.port}.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # Let a replica take over whatever its replication lag: the tests
            # decide what may be lost (see docs/scale-out.md on WAIT).
            "--cluster-replica-validity-factor", "0",
            # Slots of a dead master fail alone; the rest of the cluster serves on.
            "--cluster-require-full-coverage", "no",
        ]  # fmt: skip

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def pause(self) -> None:
        """SIGSTOP: the process stays but answers nothing (a stalled machine)."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def info(self, section: str) -> dict[str, str]:
        text = cluster_command(self.port, "INFO", section)
        fields: dict[str, str] = {}
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip()] = value.strip()
        return fields


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each, all on 127.0.0.1."""

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
    ) -> None:
        if masters < 3:
            raise ValueError("Redis Cluster needs at least 3 masters")
        self.directory = Path(directory)
        ports = free_ports(masters * (1 + replicas), partner_offset=_BUS_OFFSET)
        self.replicas_per_master = replicas
        self.nodes = [
            ClusterNode(self.directory / f"node-{port}", port, node_timeout_ms=node_timeout_ms)
            for port in ports
        ]
        self._served: dict[int, list[tuple[int, int]]] = {}

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start every node, create the cluster, wait until it is ready (<= 60 s)."""
        try:
            for node in self.nodes:
                node.start()
            cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
            result = subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    str(self.replicas_per_master),
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed:\n{result.stdout}\n{result.stderr}"
                )
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            if node.paused:
                node.resume()
            node.kill()

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

    # -- topology -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def live_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running and not node.paused]

    def node(self, port: int) -> ClusterNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def topology(self) -> dict[int, tuple[str, int | None, list[tuple[int, int]]]]:
        """``port -> (role, master port or None, slot ranges)`` as a live node sees it."""
        last: Exception | None = None
        for node in self.live_nodes():
            try:
                text = cluster_command(node.port, "CLUSTER", "NODES")
            except (OSError, RuntimeError) as exc:
                last = exc
                continue
            return _parse_nodes(text)
        raise RuntimeError(f"no live cluster node answers CLUSTER NODES ({last})")

    def masters(self) -> list[int]:
        """Ports of the nodes that are masters (not failed), serving slots."""
        return sorted(
            port for port, (role, _, slots) in self.topology().items() if role == "master" and slots
        )

    def master_of_slot(self, slot: int) -> int:
        for port, (role, _, slots) in self.topology().items():
            if role == "master" and any(lo <= slot <= hi for lo, hi in slots):
                return port
        raise KeyError(slot)

    def replicas_of(self, master_port: int) -> list[int]:
        return sorted(
            port
            for port, (role, master, _) in self.topology().items()
            if role == "slave" and master == master_port
        )

    # -- waiting ----------------------------------------------------------------------

    def _ready(self) -> bool:
        try:
            for node in self.live_nodes():
                if "cluster_state:ok" not in cluster_command(node.port, "CLUSTER", "INFO"):
                    return False
                replication = node.info("replication")
                if replication.get("role") == "slave":
                    if replication.get("master_link_status") != "up":
                        return False
                    if replication.get("master_sync_in_progress", "0") != "0":
                        return False
            topology = self.topology()
        except (OSError, RuntimeError):
            return False
        covered = sum(
            hi - lo + 1
            for role, _, slots in topology.values()
            if role == "master"
            for lo, hi in slots
        )
        return covered == 16384

    def wait_ready(self, timeout: float = _READY_TIMEOUT) -> None:
        """Wait until every live node says ``cluster_state:ok`` and replicas are in sync."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not become ready in {timeout} s")

    def kill(self, port: int) -> list[tuple[int, int]]:
        """SIGKILL the node on ``port``; return the slot ranges it served as master."""
        role, _, slots = self.topology().get(port, ("?", None, []))
        node = self.node(port)
        if node.paused:
            node.resume()
        node.kill()
        self._served[port] = slots if role == "master" else []
        return list(self._served[port])

    def restart(self, port: int) -> None:
        """Start a killed node again (same port and nodes.conf): it rejoins, as a replica
        if it lost its slots; wait until the cluster is ready again."""
        self.node(port).start()
        self._served.pop(port, None)
        self.wait_ready()

    def wait_for_failover(self, dead_port: int, timeout: float = _READY_TIMEOUT) -> int:
        """Wait until a live node is master of every slot ``dead_port`` served; return its port.

        Also waits until every live node reports ``cluster_state:ok``.
        """
        slots = self._served.get(dead_port) or []
        if not slots:
            raise ValueError(f"127.0.0.1:{dead_port} was not a master killed with kill()")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, RuntimeError):
                for port, (role, _, served) in self.topology().items():
                    if (
                        role == "master"
                        and port != dead_port
                        and self.node(port).running
                        and all(
                            any(lo <= s_lo and s_hi <= hi for lo, hi in served)
                            for s_lo, s_hi in slots
                        )
                        and all(
                            "cluster_state:ok" in cluster_command(n.port, "CLUSTER", "INFO")
                            for n in self.live_nodes()
                        )
                    ):
                        return port
            time.sleep(0.1)
        raise RuntimeError(f"no replica took over from 127.0.0.1:{dead_port} in {timeout} s")

    def __repr__(self) -> str:
        return f"RedisCluster({', '.join(str(node.port) for node in self.nodes)})"


def _parse_nodes(text: str) -> dict[int, tuple[str, int | None, list[tuple[int, int]]]]:
    """Parse ``CLUSTER NODES``; failed nodes are reported with role ``failed``."""
    ids: dict[str, int] = {}
    rows: list[tuple[int, str, str, list[str]]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, address, flags, master_id = fields[0], fields[1], fields[2], fields[3]
        port = int(address.split("@")[0].rsplit(":", 1)[1])
        ids[node_id] = port
        rows.append((port, flags, master_id, fields[8:]))
    result: dict[int, tuple[str, int | None, list[tuple[int, int]]]] = {}
    for port, flags, master_id, slot_fields in rows:
        flag_set = set(flags.split(","))
        if flag_set & {"fail", "fail?", "noaddr", "handshake"}:
            role = "failed"
        elif "master" in flag_set:
            role = "master"
        else:
            role = "slave"
        slots: list[tuple[int, int]] = []
        for field in slot_fields:
            if field.startswith("["):
                continue  # a slot being migrated or imported
            lo, _, hi = field.partition("-")
            slots.append((int(lo), int(hi or lo)))
        result[port] = (role, ids.get(master_id), slots)
    return result


def wait_replicated(cluster: RedisCluster, master: int, replica: int) -> None:
    """Block until ``replica`` has everything ``master`` has written (at most 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        offset = int(cluster.node(master).info("replication")["master_repl_offset"])
        if int(cluster.node(replica).info("replication").get("slave_repl_offset", -1)) >= offset:
            return
        time.sleep(0.05)
    raise AssertionError("the replica did not catch up")
