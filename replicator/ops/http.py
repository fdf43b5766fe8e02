"""HTTP endpoints: ``/metrics``, ``/healthz``, ``/readyz`` and the admin API, on the stdlib server.

The stdlib server in a daemon thread is enough here: a handful of requests a minute (Prometheus scrapes, ECS
and load balancer checks, an operator's pause), no TLS (the task's network and the load balancer provide it),
and no extra dependency. ``replicator.ops.httpserver`` bounds its connections, threads and time per request
so that no client can starve it (and says why it is not waitress).

- ``GET /metrics``: every metric of ``replicator.obs.metrics`` in the Prometheus text format.
- ``GET /healthz``: 200 while the process serves requests (liveness).
- ``GET /readyz``: 200 when connected, holding the lease and making progress; 503 with the reasons otherwise.
- ``GET /readyz`` stays 200 while tables are stopped (a restart cannot fix a bad file, and the other tables
  go on); its body lists them as ``stopped_tables``, and the ``replicator_table_stopped`` gauge alerts.
- ``GET /tables``, ``GET /status`` (what ``replicator status --json`` prints),
  ``POST /tables/{schema.table}/pause|resume|resync|retry|skip`` (JSON body ``{"reason": ..., "who":
  ...}``, both optional): need ``Authorization: Bearer <token>``; the token is compared in constant time.
  An action that does not apply to the table as it is (``resume`` of a table its source stopped, ``skip``
  of a table that is not stopped) answers 409 with what to do instead.
  Missing or wrong token: 401 and nothing changes. No token configured: the admin API is off (403). Every
  admin call, allowed or not, is logged as an ``admin_request`` audit event (never with the token).
- ``GET /``: the operator console (``replicator.ops.console``), beside the admin API: its shell needs no
  token and holds no data; ``GET /console/state``, the data it refreshes, needs the token like ``/status``.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import threading
import urllib.parse
from typing import Any, Protocol

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from replicator.config import Secret, admin_token_problems
from replicator.model import TableId
from replicator.obs import metrics
from replicator.ops import console
from replicator.ops.actions import Refused
from replicator.ops.control import ACTIONS
from replicator.ops.httpserver import BoundedHandler, BoundedHTTPServer, Limits

log = structlog.get_logger(__name__)


class NotActive(RuntimeError):
    """This process is not the one doing the work (no lease, or still starting): try the active task."""


class Backend(Protocol):
    """What the server asks the daemon. Methods run on request threads."""

    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def tables(self) -> list[dict[str, Any]]: ...

    def status(self) -> dict[str, Any]: ...

    def act(self, action: str, table: TableId, *, reason: str, who: str) -> dict[str, Any]:
        """Apply the action; ``KeyError`` for a table that is not replicated, ``NotActive`` when this
        process cannot act now."""
        ...


class ObsServer:
    def __init__(
        self,
        host: str,
        port: int,
        backend: Backend,
        *,
        admin_token: Secret | None,
        limits: Limits | None = None,
        admin: tuple[str, int] | None = None,
    ) -> None:
        """``admin``: (host, port) of a listener of its own for the admin API; the main one refuses it."""
        weak = admin_token_problems(admin_token)
        if weak:  # config.validate refuses it first; this guards every other way in
            raise ValueError(weak[0])
        attrs = {
            "backend": backend, "token": admin_token, "admin_here": admin is None,
            "quarantine": console.QuarantineCache(), "token_id": token_id(admin_token),
        }  # fmt: skip
        self.httpd = BoundedHTTPServer((host, port), type("Handler", (_Handler,), attrs), limits or Limits())
        self.port: int = self.httpd.server_address[1]
        self._servers = [(self.httpd, admin is None)]
        if admin is not None:
            attrs = {**attrs, "admin_here": True}
            handler = type("Handler", (_Handler,), attrs)
            try:
                self._servers.append((BoundedHTTPServer(admin, handler, limits or Limits()), True))
            except OSError:
                self.httpd.server_close()
                raise
        # Where a CLI on this host reaches the admin API (the daemon's endpoint file says so).
        bound_host, bound_port = self._servers[-1][0].server_address[:2]
        reach = "127.0.0.1" if bound_host in ("0.0.0.0", "") else str(bound_host)  # noqa: S104
        self.admin_url = f"http://{reach}:{bound_port}"
        self._threads = [
            threading.Thread(target=s.serve_forever, name="http", daemon=True) for s, _ in self._servers
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()
        for s, admin_api in self._servers:
            host, port = s.server_address[:2]
            log.info("http_listening", host=host, port=port, admin_api=admin_api)

    def stop(self) -> None:
        for s, _ in self._servers:
            s.shutdown()
            s.server_close()


def token_id(token: Secret | None) -> str | None:
    """Names the token in audit events (``caller``) without revealing it: a prefix of its SHA-256."""
    if token is None:
        return None
    digest = hashlib.sha256(token.reveal().strip().encode()).hexdigest()
    return f"sha256:{digest[:12]}"


class _Handler(BoundedHandler):
    backend: Backend
    token: Secret | None
    token_id: str | None
    _caller: str | None = None  # the token id once this request is authorised
    admin_here: bool  # False on the main listener when the admin API has a listener of its own
    quarantine: console.QuarantineCache
    server_version = "replicator"

    # -- routing ---------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        try:
            self._get(self.path.split("?", 1)[0])
        except (ConnectionError, TimeoutError):
            raise  # the client went away: the server logs it (``http_connection_lost``)
        except Exception as exc:
            # Answered, never a connection closed without a word (which a client cannot tell from a
            # network fault): the error, logged and counted, with its type and message.
            metrics.ERRORS.labels(stage="http", kind=type(exc).__name__).inc()
            log.error(
                "http_handler_failed", path=self.path.split("?", 1)[0], error=f"{type(exc).__name__}: {exc}"
            )
            self.close_connection = True
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _get(self, path: str) -> None:
        if path == "/metrics":
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            ready, detail = self.backend.readiness()
            self._json(200 if ready else 503, {"ready": ready, **detail})
        elif path in ("/tables", "/status"):
            if self._authorised(path[1:], "*"):
                try:
                    self._json(
                        200, {"tables": self.backend.tables()} if path == "/tables" else self.backend.status()
                    )
                except NotActive as exc:
                    self._json(503, {"error": str(exc)})
        elif path == "/" or console.asset(path) is not None or path == console.STATE_PATH:
            self._console(path)
        else:
            self._json(404, {"error": "not found"})

    def _console(self, path: str) -> None:
        """The operator console (``replicator.ops.console``), served beside the admin API."""
        if path == console.STATE_PATH:
            if self._authorised("console", "*"):
                data = console.render_state(self.backend, self.quarantine, NotActive)
                headers = {**console.HEADERS, "Vary": "Accept-Encoding"}
                if "gzip" in self.headers.get("Accept-Encoding", ""):  # 500 tables: 450 kB, 21 kB gzipped
                    data, headers["Content-Encoding"] = gzip.compress(data, 5), "gzip"
                self._send(200, data, "text/html; charset=utf-8", headers)
        elif not self.admin_here:
            self._json(404, {"error": "not found; the console is beside the admin API on http.admin_port"})
        elif path == "/":
            self._send(200, console.page(), "text/html; charset=utf-8", console.HEADERS)
        else:
            data, ctype = console.asset(path) or (b"", "")
            self._send(200, data, ctype, {**console.HEADERS, "Cache-Control": "no-cache"})

    def do_POST(self) -> None:
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if len(parts) != 3 or parts[0] != "tables" or parts[2] not in ACTIONS:
            self._json(404, {"error": f"not found; POST /tables/{{schema.table}}/{'|'.join(ACTIONS)}"})
            return
        action, name = parts[2], urllib.parse.unquote(parts[1])  # the console encodes every name
        if not self._authorised(action, name):
            return
        try:
            body = self._body()
            table = TableId.parse(name)
        except ValueError as exc:
            self._audit(action, name, "bad_request", "")
            self._json(400, {"error": str(exc)})
            return
        reason = str(body.get("reason") or "")
        who = f"{body.get('who') or 'api'} ({self.client_address[0]})"
        try:
            result = self.backend.act(action, table, reason=reason, who=who)
        except KeyError:
            self._audit(action, name, "unknown_table", who)
            self._json(404, {"error": f"{name} is not a replicated table"})
            return
        except NotActive as exc:
            self._audit(action, name, "not_active", who)
            self._json(503, {"error": str(exc)})
            return
        except Refused as exc:
            self._audit(action, name, "refused", who, reason=reason)
            self._json(409, {"error": str(exc)})
            return
        except Exception as exc:
            self._audit(action, name, "failed", who)
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._audit(action, name, "ok", who, reason=reason)
        self._json(202 if action == "resync" else 200, result)

    # -- helpers ---------------------------------------------------------------------------------------

    def _authorised(self, action: str, name: str) -> bool:
        if not self.admin_here:
            self._audit(action, name, "not_on_this_port", "")
            self._json(404, {"error": "not found; the admin API listens on http.admin_host:admin_port"})
            return False
        if self.token is None:
            self._audit(action, name, "admin_api_off", "")
            self._json(403, {"error": "the admin API is off: set http.admin_token (or admin_token_file)"})
            return False
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest on bytes: constant time whatever the input, also for non-ASCII text.
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.reveal().strip().encode()
        )
        if not ok:
            self._audit(action, name, "unauthorized", "")
            self._json(401, {"error": "missing or wrong bearer token"}, {"WWW-Authenticate": "Bearer"})
            return False
        self._caller = self.token_id
        if action not in ACTIONS:  # a read (tables, status, the console's refresh): counted, logged at debug
            self._audit(action, name, "ok", "")
        return True

    def _audit(self, action: str, table: str, result: str, who: str, *, reason: str = "") -> None:
        metrics.ADMIN_REQUESTS.labels(action=action, result=result).inc()
        level = log.warning if result != "ok" else log.info if action in ACTIONS else log.debug
        level(
            "admin_request", action=action, table=table, result=result, who=who, reason=reason,
            caller=self._caller, client=self.client_address[0],
            forwarded_for=(self.headers.get("X-Forwarded-For") or "")[:200] or None,
        )  # fmt: skip

    def _body(self) -> dict[str, Any]:
        raw = self.body  # read by BoundedHandler within the request deadline, its length checked
        if not raw.strip():
            return {}
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"request body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ValueError("request body must be a JSON object")
        return doc

    def _json(self, code: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, (json.dumps(doc, default=str) + "\n").encode(), "application/json", headers)

    def _send(self, code: int, data: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
