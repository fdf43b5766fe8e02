"""The stdlib HTTP server, hardened so that no client can starve it (issue 17).

``http.server.ThreadingHTTPServer`` as it comes starts one thread per connection with no limit and no
timeout, keeps a listen queue of 5, and prints a plain-text traceback for every broken pipe. Here:

- at most ``max_connections`` connections (and so handler threads and descriptors) at once. A new
  connection over the limit takes the place of the oldest one that is still *waiting* (sending its request,
  or idle between keep-alive requests); only when every connection is busy answering is the new one refused
  (``503``). A flood of idle or slow connections therefore never locks out a health check or a scrape;
- a whole request (head and body) must arrive within ``request_timeout`` of the connection becoming ready
  for it, however slowly its bytes trickle in: a watchdog shuts down connections past their deadline,
  and every socket read and write also times out on its own;
- the body is read before the handler runs, with ``Content-Length`` checked first: missing or bad lengths,
  negative or too large ones, chunked bodies and bodies shorter than announced get ``400``/``413``, never a
  hanging request;
- every connection refused, timed out or dropped writes one structured log line
  (``http_connection_rejected``, ``http_connection_lost``), never a traceback on stderr.

Why not waitress (or uvicorn)? Waitress stops *accepting* at its connection limit, so a health check waits
behind the flood in the listen queue, and its idle timeout restarts with every byte, so a client dripping a
byte a second holds its channel for ever; uvicorn would bring an ASGI stack for four endpoints. The limits
above take about 150 lines on the stdlib server, add no dependency to an image that handles PHI, and are
tested by ``tests/ops/test_http_flood.py`` and ``tests/ops/test_http_limits.py``.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

log = structlog.get_logger(__name__)

MAX_BODY = 64 * 1024
_REAP_INTERVAL = 0.25
_REAP_GRACE = 0.5  # the socket's own timeout answers first (with a 400) when it can
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 64
    request_timeout: float = 10.0


class _Conn:
    __slots__ = ("client", "deadline", "served", "since", "sock", "waiting")

    def __init__(self, sock: socket.socket, client: str, timeout: float) -> None:
        now = time.monotonic()
        self.sock, self.client, self.since, self.deadline = sock, client, now, now + timeout
        self.waiting = True  # reading a request (or idle between requests), not answering one
        self.served = 0


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # SYNs of a health check must not be dropped while a flood is being shed

    def __init__(self, address: tuple[str, int], handler: type[BoundedHandler], limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, _Conn] = {}
        self._closed = threading.Event()
        super().__init__(address, handler)
        self._reaper = threading.Thread(target=self._reap, name="http-reaper", daemon=True)
        self._reaper.start()

    # -- connection bookkeeping (called by socketserver and by the handler threads) -------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        client = str(client_address[0])
        with self._lock:
            if len(self._conns) >= self.limits.max_connections:
                waiting = [c for c in self._conns.values() if c.waiting]
                if not waiting:
                    self._refuse(request, client)
                    return
                oldest = min(waiting, key=lambda c: c.since)
                self._drop(oldest, "evicted_for_new_connection")
            self._conns[request] = _Conn(request, client, self.limits.request_timeout)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._conns.pop(request, None)
        super().shutdown_request(request)

    def waiting(self, sock: socket.socket) -> int:
        """The connection waits for a (next) request: its deadline starts now. Returns requests served."""
        with self._lock:
            conn = self._conns.get(sock)
            if conn is None:
                return 0
            conn.waiting, conn.since = True, time.monotonic()
            conn.deadline = conn.since + self.limits.request_timeout
            return conn.served

    def busy(self, sock: socket.socket) -> bool:
        """The request has fully arrived: the handler answers it, with no deadline and no eviction.
        False when the connection was dropped meanwhile (it was logged then): nothing more to do."""
        with self._lock:
            conn = self._conns.get(sock)
            if conn is None:
                return False
            conn.waiting = False
            conn.served += 1
            return True

    def tracked(self, sock: socket.socket) -> bool:
        with self._lock:
            return sock in self._conns

    def deadline(self, sock: socket.socket) -> float:
        with self._lock:
            conn = self._conns.get(sock)
            return conn.deadline if conn is not None else time.monotonic()

    def _drop(self, conn: _Conn, reason: str) -> None:
        """Under the lock: end a waiting connection; its thread sees end-of-file and finishes."""
        self._conns.pop(conn.sock, None)
        if conn.served:
            log.debug("http_connection_closed", client=conn.client, reason=reason, requests=conn.served)
        else:
            log.warning("http_connection_rejected", client=conn.client, reason=reason)
        with contextlib.suppress(OSError):  # already gone
            conn.sock.shutdown(socket.SHUT_RDWR)

    def _refuse(self, request: socket.socket, client: str) -> None:
        log.warning("http_connection_rejected", client=client, reason="too_many_connections")
        try:
            request.setblocking(False)
            request.send(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        except OSError:
            pass
        super().shutdown_request(request)

    def _reap(self) -> None:
        while not self._closed.wait(_REAP_INTERVAL):
            now = time.monotonic()
            with self._lock:
                for conn in [c for c in self._conns.values() if c.waiting and c.deadline + _REAP_GRACE < now]:
                    self._drop(conn, "request_timeout" if not conn.served else "idle_timeout")

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr here; a client that went away is not our error.
        exc = sys.exc_info()[1]
        client = str(client_address[0])
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.info("http_connection_lost", client=client, error=type(exc).__name__)
        else:
            log.error("http_handler_failed", client=client, error=f"{type(exc).__name__}: {exc}")


class BadRequest(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class BoundedHandler(BaseHTTPRequestHandler):
    """Reads the whole request within the server's deadline before any ``do_*`` method runs."""

    server: BoundedHTTPServer
    protocol_version = "HTTP/1.1"
    body: bytes = b""
    _served = 0  # requests this connection had served before the current one

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.limits.request_timeout)  # every read and write, on its own

    def handle_one_request(self) -> None:
        self._served = self.server.waiting(self.connection)
        super().handle_one_request()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        try:
            self.body = self._read_body()
        except BadRequest as exc:
            self.close_connection = True
            if self.server.tracked(self.connection):  # else the watchdog dropped (and logged) it
                self.reject(exc.code, str(exc))
            return False
        if not self.server.busy(self.connection):
            self.close_connection = True
            return False
        return True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            raise BadRequest(400, "Transfer-Encoding is not accepted; send Content-Length")
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return b""
        text = values[0].strip()
        if len(set(values)) != 1 or not text.isdigit() or not text.isascii():
            raise BadRequest(400, f"bad Content-Length {values[0][:40]!r}: expected one non-negative integer")
        length = int(text)
        if length > MAX_BODY:
            raise BadRequest(413, f"request body too large: at most {MAX_BODY} bytes")
        chunks: list[bytes] = []
        got = 0
        deadline = self.server.deadline(self.connection)
        try:
            while got < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(length - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            pass
        finally:
            self.connection.settimeout(self.server.limits.request_timeout)
        if got < length:
            raise BadRequest(400, f"request body shorter than its Content-Length ({got} of {length} bytes)")
        return b"".join(chunks)

    def reject(self, code: int, message: str) -> None:
        """Answer a request that cannot be served (the subclass formats the body) and log it once."""
        log.warning(
            "http_connection_rejected", client=self.client_address[0], reason="bad_request", code=code,
            detail=message,
        )  # fmt: skip
        self.send_response(code)
        data = (message + "\n").encode()
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_error(self, format: str, *args: Any) -> None:
        # Malformed request lines and socket timeouts (send_error and handle_one_request call this).
        text = format % args
        if "timed out" in text and self._served:
            log.debug("http_connection_closed", client=self.client_address[0], reason="idle_timeout")
            return
        reason = "request_timeout" if "timed out" in text else "bad_request"
        log.warning("http_connection_rejected", client=self.client_address[0], reason=reason, detail=text)

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes every request to stderr; scrapes and probes would drown the event log.
        log.debug("http_request", client=self.client_address[0], line=format % args)
