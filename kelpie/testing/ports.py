"""Free loopback ports for the servers the test harness starts.

A port found by ``bind(0)`` is free only at that instant: until the server
binds it, any outgoing connection (the suite makes many) may be given it as
its local port, and a server restarted on its old port after a kill races
every client for it. Ports below the kernel's ephemeral range are never handed
out implicitly, so the harness takes its ports from there.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["free_port", "free_ports"]

_BOTTOM = 11000


def _ephemeral_low() -> int:
    """The first port the kernel gives outgoing connections (Linux default 32768)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, partner_offset: int = 0) -> list[int]:
    """``count`` distinct free loopback ports below the ephemeral range.

    With ``partner_offset`` (a Redis Cluster bus port is ``port + 10000``),
    ``port + partner_offset`` is free and below the range as well. The scan
    starts at a random place so concurrent harnesses rarely collide.
    """
    top = min(_ephemeral_low(), 65536) - partner_offset
    span = top - _BOTTOM
    if span < 100:
        raise RuntimeError("no free port range below the kernel's ephemeral ports")
    start = int.from_bytes(os.urandom(4), "big") % span
    ports: list[int] = []
    for step in range(span):
        candidate = _BOTTOM + (start + step) % span
        partner_free = partner_offset == 0 or _port_free(candidate + partner_offset)
        if _port_free(candidate) and partner_free:
            ports.append(candidate)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"fewer than {count} free loopback ports below the ephemeral range")


def free_port() -> int:
    """One free loopback port below the ephemeral range."""
    return free_ports(1)[0]
