"""Issue 17, point 2: requests that are malformed, incomplete or never finished get an answer or are closed
in bounded time, each with one structured log line, and never hold the server."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from tests.helpers.daemon import TOKEN, DaemonProcess, Feed, daemon_config, free_port, http, tables_of

TIMEOUT = 2.0  # http.request_timeout_seconds of the daemon under test
MAX_CONNECTIONS = 8


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("limits")
    feed = Feed(root, seed=44, flushes=1)
    feed.release(1)
    port = free_port()
    env = {
        "REPLICATOR__HTTP__REQUEST_TIMEOUT_SECONDS": str(TIMEOUT),
        "REPLICATOR__HTTP__MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    d = DaemonProcess(daemon_config(root / "r.toml", source=feed.live, port=port), port, env=env)
    d.wait_ready()
    yield d
    assert d.terminate() == 0
    assert TOKEN not in d.log.read_text()


def _connect(d: DaemonProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT + 8)
    return s


def _answer(s: socket.socket) -> tuple[bytes, float]:
    """The server's bytes until it closes the connection (or the test's own timeout), and how long it took."""
    start = time.monotonic()
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data, time.monotonic() - start


def _pause_head(length: str) -> bytes:
    return (
        f"POST /tables/dbo.patients/pause HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _state(d: DaemonProcess) -> str:
    return str(tables_of(d.url)["dbo.patients"]["state"])


def _log_lines(d: DaemonProcess) -> list[str]:
    return [line for line in d.log.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "+5", "5, 6", " "])
def test_a_bad_content_length_gets_400_at_once_and_changes_nothing(
    daemon: DaemonProcess, length: str
) -> None:
    with _connect(daemon) as s:
        s.sendall(_pause_head(length) + b'{"reason": "x"}')
        data, took = _answer(s)
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert took < 1.0, took
    assert _state(daemon) == "active"


def test_a_body_shorter_than_its_content_length_gets_400_within_the_request_timeout(
    daemon: DaemonProcess,
) -> None:
    with _connect(daemon) as s:
        s.sendall(_pause_head("50") + b'{"reason":')
        data, took = _answer(s)
    assert data.startswith(b"HTTP/1.1 400") and b"shorter than its Content-Length" in data, data[:300]
    assert TIMEOUT - 0.5 < took < TIMEOUT + 1.5, took
    assert _state(daemon) == "active"
    lines = [line for line in _log_lines(daemon) if "shorter than its Content-Length" in line]
    assert len(lines) == 1 and json.loads(lines[0])["event"] == "http_connection_rejected"


def test_a_body_too_large_or_chunked_is_refused_before_it_is_read(daemon: DaemonProcess) -> None:
    with _connect(daemon) as s:
        s.sendall(_pause_head(str(10**9)))
        data, took = _answer(s)
    assert data.startswith(b"HTTP/1.1 413") and took < 1.0, (data[:200], took)
    with _connect(daemon) as s:
        head = _pause_head("0").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
        s.sendall(head + b"5\r\nhello\r\n0\r\n\r\n")
        data, took = _answer(s)
    assert data.startswith(b"HTTP/1.1 400") and took < 1.0, (data[:200], took)
    assert _state(daemon) == "active"


def test_idle_and_slowly_dripping_connections_are_closed_after_the_request_timeout(
    daemon: DaemonProcess,
) -> None:
    with _connect(daemon) as idle, _connect(daemon) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        start = time.monotonic()
        slow.settimeout(0.2)
        closed_at = None
        while time.monotonic() - start < TIMEOUT + 6:
            try:
                slow.send(b"a")  # a byte every 0.2 s: each read finishes well within any per-read timeout
                if slow.recv(1) == b"":
                    closed_at = time.monotonic() - start
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_at = time.monotonic() - start
                break
        idle_data, idle_took = _answer(idle)
    assert closed_at is not None and closed_at < TIMEOUT + 1.5, closed_at
    assert idle_data == b"" and idle_took < TIMEOUT + 1.5 - closed_at + 0.5, idle_took


def test_connections_beyond_the_limit_replace_the_oldest_idle_one_and_health_checks_go_through(
    daemon: DaemonProcess,
) -> None:
    idle = [_connect(daemon) for _ in range(MAX_CONNECTIONS * 3)]
    try:
        time.sleep(0.3)
        start = time.monotonic()
        assert http("GET", f"{daemon.url}/healthz") == (200, "ok\n")
        assert time.monotonic() - start < 1.0
        oldest = idle[0]
        oldest.settimeout(1.0)
        assert oldest.recv(1) == b"", "the oldest idle connection was not dropped for the new ones"
    finally:
        for s in idle:
            s.close()
    rejected = [json.loads(x) for x in _log_lines(daemon) if '"http_connection_rejected"' in x]
    assert any(r["reason"] == "evicted_for_new_connection" for r in rejected)


def test_clients_that_hang_up_mid_answer_leave_one_json_line_each_and_no_traceback(
    daemon: DaemonProcess,
) -> None:
    for _ in range(40):
        s = _connect(daemon)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()
    time.sleep(1.0)
    assert http("GET", f"{daemon.url}/healthz") == (200, "ok\n")
    lines = _log_lines(daemon)
    assert all(line.startswith("{") for line in lines), [x for x in lines if not x.startswith("{")][:5]
    assert "Traceback" not in daemon.log.read_text()
