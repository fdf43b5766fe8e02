"""Free TCP ports for the daemons tests start, without two tests ever being handed the same one.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, and so can any outgoing
connection (to PostgreSQL, to the S3 server) made between the check and the daemon's own bind; and two xdist
workers can be handed the same port one after the other. Once, a test's daemon lost its port that way: its
readiness check was answered by another test's daemon, which then went away. Here each xdist worker takes
ports from its own block below the ephemeral range (which the kernel never hands out by itself), in turn,
checked free by a bind."""

from __future__ import annotations

import os
import random
import socket
import threading

_BASE = 20_000  # below net.ipv4.ip_local_port_range (32768-60999 here)
_BLOCK = 1_000
_lock = threading.Lock()
_turn = [random.randrange(_BLOCK)]  # two sessions at once on one machine start apart


def _block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 12
    return _BASE + (index % 13) * _BLOCK


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on now, never handed out before in this process."""
    with _lock:
        start = _block()
        for _ in range(_BLOCK):
            port = start + _turn[0] % _BLOCK
            _turn[0] += 1
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port in {start}-{start + _BLOCK - 1}")
