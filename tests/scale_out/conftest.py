"""Runtime processes (``kelpie.testing.runtime_node``) sharing one redis-server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kelpie.testing.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 1.0


@dataclass
class Node:
    node_id: str
    process: subprocess.Popen[bytes]
    port: int
    stopped: bool = field(default=False)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
        self.stopped = False


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server executable on PATH")
    with RedisServer(tmp_path_factory.mktemp("scale-out-redis")) as server:
        yield server


@pytest.fixture
def store_url(shared_redis: RedisServer) -> str:
    return f"{shared_redis.url}?prefix=so-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def start_nodes(store_url: str) -> Iterator[Callable[[int], dict[str, Node]]]:
    """``start_nodes(3)`` -> ``{"n1": Node, ...}``, each a runtime process on ``store_url``."""
    started: list[Node] = []

    def start(count: int) -> dict[str, Node]:
        nodes: dict[str, Node] = {}
        for i in range(1, count + 1):
            node_id = f"n{i}"
            command = [
                sys.executable, "-m", "kelpie.testing.runtime_node",
                "--url", store_url, "--node-id", node_id,
                "--lease-seconds", str(LEASE_SECONDS),
            ]  # fmt: skip
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
            assert process.stdout is not None
            line = process.stdout.readline().decode()
            assert line.startswith("READY "), f"{node_id} did not start: {line!r}"
            node = Node(node_id, process, int(line.split()[1]))
            started.append(node)
            nodes[node_id] = node
        return nodes

    yield start
    for node in started:
        with contextlib.suppress(ProcessLookupError):
            if node.stopped:
                node.resume()
            node.process.send_signal(signal.SIGTERM)
    for node in started:
        try:
            node.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
