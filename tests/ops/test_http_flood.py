"""Issue 17, point 2: a flood of idle and slow connections cannot starve the daemon.

A daemon with only 256 file descriptors (RLIMIT_NOFILE) is flooded on loopback for a bounded time with
hundreds of connections that send nothing or drip a request head a byte at a time, reopened as soon as the
server drops them. Meanwhile ``/healthz`` must answer quickly every time, CDC flushes released during the
flood must be applied promptly, the daemon's descriptors and threads stay bounded, and every rejected
connection leaves one structured (JSON) log line, never a plain-text traceback.
"""

from __future__ import annotations

import json
import re
import resource
import selectors
import socket
import threading
import time
import urllib.request
from pathlib import Path

from tests.helpers.daemon import DaemonProcess, Feed, caught_up, daemon_config, free_port, wait_for

NOFILE = 256
IDLE, SLOW = 220, 100  # together more connections than the daemon has descriptors
FLOOD_SECONDS = 12.0
REQUEST_TIMEOUT = 3.0


class Flood:
    """Keeps IDLE silent and SLOW dripping connections open to ``port`` until stopped (loopback only)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.opened = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Flood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=30)

    def _open(self) -> socket.socket:
        # Non-blocking: the flood does not wait for the server to accept, as an attacker would not.
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", self.port))
        self.opened += 1
        return s

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        slots: dict[int, socket.socket | None] = dict.fromkeys(range(IDLE + SLOW))
        headed: set[int] = set()  # slow connections that have sent their request line
        connected: set[int] = set()
        since: dict[int, float] = {}
        try:
            while not self.stop.is_set():
                for i in list(slots):
                    s = slots[i]
                    if s is not None and i not in connected and time.monotonic() - since[i] > 0.5:
                        try:
                            s.getpeername()
                            connected.add(i)
                        except OSError:  # SYN not accepted yet (listen queue full): try again at once
                            sel.unregister(s)
                            s.close()
                            s = slots[i] = None
                    if s is None:
                        s = slots[i] = self._open()
                        since[i] = time.monotonic()
                        sel.register(s, selectors.EVENT_READ, i)
                for key, _ in sel.select(timeout=0.2):  # readable: the server answered or closed it
                    s, i = key.fileobj, key.data
                    assert isinstance(s, socket.socket)
                    sel.unregister(s)
                    s.close()
                    slots[i] = None
                    headed.discard(i)
                    connected.discard(i)
                for i in range(IDLE, IDLE + SLOW):  # a request head, then a header that never ends
                    s = slots[i]
                    if s is None:
                        continue
                    try:
                        s.send(b"X" if i in headed else b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                        headed.add(i)
                    except (BlockingIOError, ConnectionError, OSError):
                        pass  # not connected yet, or gone: the select above reopens it
        finally:
            for s in slots.values():
                if s is not None:
                    s.close()
            sel.close()


def _metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _healthz(url: str) -> float:
    start = time.monotonic()
    with urllib.request.urlopen(f"{url}/healthz", timeout=REQUEST_TIMEOUT) as r:
        assert r.status == 200 and r.read() == b"ok\n"
    return time.monotonic() - start


def _caught_up_metrics(url: str, captured_before: float) -> bool:
    captured = _metric(url, "replicator_changes_captured_total")
    return captured > captured_before and _metric(url, "replicator_changes_merged_total") == captured


def test_a_flood_of_idle_and_slow_connections_starves_neither_health_checks_nor_replication(
    tmp_path: Path,
) -> None:
    feed = Feed(tmp_path, seed=43, flushes=4)
    feed.release(1)
    port = free_port()
    env = {"REPLICATOR__HTTP__REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT)}
    d = DaemonProcess(daemon_config(tmp_path / "r.toml", source=feed.live, port=port), port, env=env)
    resource.prlimit(d.proc.pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    try:
        d.wait_ready()
        wait_for(lambda: caught_up(d.url), 60, "caught up before the flood")
        latencies: list[float] = []
        applied: list[float] = []
        most_fds = most_threads = 0
        with Flood(port) as flood:
            start = time.monotonic()
            while time.monotonic() - start < FLOOD_SECONDS:
                latencies.append(_healthz(d.url))
                fds = len(list(Path(f"/proc/{d.proc.pid}/fd").iterdir()))
                threads = int(
                    re.findall(r"^Threads:\s+(\d+)", Path(f"/proc/{d.proc.pid}/status").read_text(), re.M)[0]
                )
                most_fds, most_threads = max(most_fds, fds), max(most_threads, threads)
                if feed.released < feed.flushes and time.monotonic() - start > 3 * feed.released:
                    before = _metric(d.url, "replicator_changes_captured_total")
                    released = time.monotonic()
                    feed.release(1)
                    wait_for(lambda b=before: _caught_up_metrics(d.url, b), 15, "a flush during the flood")
                    applied.append(time.monotonic() - released)
                time.sleep(0.3)
            opened = flood.opened
        print(
            f"healthz max {max(latencies):.3f}s over {len(latencies)}; flushes applied in {applied};"
            f" fds <= {most_fds}, threads <= {most_threads}; flood opened {opened} connections"
        )
        assert opened > IDLE + SLOW, "the flood did not reach its size"
        assert max(latencies) < 2.0, latencies
        assert len(applied) == feed.flushes - 1 and max(applied) < 6.0, applied
        assert most_fds < NOFILE - 32, most_fds
        assert most_threads < 120, most_threads
        assert d.proc.poll() is None
        wait_for(lambda: caught_up(d.url), 30, "caught up after the flood")
    finally:
        assert d.terminate() == 0
    lines = [line for line in d.log.read_text().splitlines() if line.strip()]
    bad = [line for line in lines if not line.startswith("{")]
    assert not bad, f"plain-text lines in the JSON log: {bad[:5]}"
    rejected = [json.loads(line) for line in lines if '"event": "http_connection_rejected"' in line]
    assert len(rejected) > IDLE, len(rejected)
    assert all(r["client"] == "127.0.0.1" and r["reason"] for r in rejected)
