"""The operator's commands (``pause``, ``resume``, ``resync``, ``tables``), with or without a running daemon.

An embedded DuckDB file may be opened by one process only: while a daemon runs on it, the CLI goes through
the daemon's admin API (found through the ``<warehouse>.daemon.json`` file the daemon writes, with the admin
token of the same config). Otherwise, and always for a PostgreSQL warehouse (which takes concurrent
writers), the CLI writes the control table itself; a running daemon picks the change up at its next round,
and a daemon started later finds it there.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import urllib.error
import urllib.request
from typing import Any

from replicator import app as app_mod
from replicator.config import Config, resolve
from replicator.model import TableId
from replicator.ops.control import ControlStore, DuckDBSession, PostgresSession, SqlSession, default_control
from replicator.ops.daemon import endpoint_file
from replicator.stage import Stager
from replicator.storage import Quarantine


class OperateError(RuntimeError):
    """Worded for the operator; the CLI prints it and exits 1."""


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a bare container
        user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}"


def act(cfg: Config, action: str, table_name: str, *, reason: str) -> dict[str, Any]:
    """Pause, resume or resync one table; returns its new control row."""
    table = _table(cfg, table_name)
    url = daemon_url(cfg)
    if url is not None:
        body = json.dumps({"reason": reason, "who": who()}).encode()
        row: dict[str, Any] = _call(cfg, "POST", f"{url}/tables/{table}/{action}", body)
        return row
    with _session(cfg, read_only=False) as session:
        store = ControlStore(session)
        store.ensure()
        return store.request(action, table, reason=reason, who=who()).to_dict()


def tables(cfg: Config) -> list[dict[str, Any]]:
    """Every configured table's control state and backlog (through the daemon when one runs)."""
    url = daemon_url(cfg)
    if url is not None:
        rows: list[dict[str, Any]] = _call(cfg, "GET", f"{url}/tables")["tables"]
        return rows
    schemas = app_mod.load_schemas(cfg)
    states = {}
    if _warehouse_exists(cfg):
        with _session(cfg, read_only=True) as session:
            store = ControlStore(session)
            if store.exists():
                states = store.read_all()
    staging = app_mod.open_staging(cfg)
    stager = Stager(staging, Quarantine(staging))
    out = []
    for t in sorted(schemas):
        row = states.get(t, default_control(t)).to_dict()
        row["backlog_batches"] = sum(1 for _ in stager.pending(t))
        row["error"] = None
        out.append(row)
    return out


def daemon_url(cfg: Config) -> str | None:
    """The admin API of a daemon running on this config's DuckDB file, or None when none runs."""
    path = endpoint_file(cfg)
    if path is None or not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        url, pid = str(doc["url"]), int(doc["pid"])
    except (OSError, ValueError, KeyError):
        return None
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=3):  # noqa: S310 - our own loopback URL
            return url
    except OSError:
        pass
    if _alive(pid):
        raise OperateError(
            f"a daemon (pid {pid}) holds {resolve(cfg, cfg.warehouse.path)} but its HTTP endpoint {url} does"
            " not answer; retry in a moment, or stop it"
        )
    return None  # a file left by a daemon that died


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _call(cfg: Config, method: str, url: str, body: bytes | None = None) -> Any:
    token = cfg.http.admin_token
    if token is None:
        raise OperateError(
            "a daemon is running on this warehouse and only its admin API may change it: set"
            " REPLICATOR__HTTP__ADMIN_TOKEN (or http.admin_token_file) to the daemon's token"
        )
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - our own URL
    request.add_header("Authorization", f"Bearer {token.reveal()}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise OperateError(f"the daemon answered {exc.code}: {detail}") from None


def _table(cfg: Config, name: str) -> TableId:
    try:
        table = TableId.parse(name)
    except ValueError as exc:
        raise OperateError(str(exc)) from None
    if table not in app_mod.load_schemas(cfg):
        raise OperateError(f"{table} is not a replicated table (see the schemas folder)")
    return table


def _warehouse_exists(cfg: Config) -> bool:
    if cfg.warehouse.kind != "duckdb":
        return True
    return os.path.exists(resolve(cfg, cfg.warehouse.path))


class _session:
    """A control session of its own: a PostgreSQL connection, or the DuckDB file opened by this process."""

    def __init__(self, cfg: Config, *, read_only: bool) -> None:
        self.cfg, self.read_only = cfg, read_only
        self._warehouse: Any = None
        self._session: SqlSession | None = None

    def __enter__(self) -> SqlSession:
        if self.cfg.warehouse.kind == "duckdb":
            from replicator.warehouses import DuckDBWarehouse

            try:
                self._warehouse = DuckDBWarehouse(
                    resolve(self.cfg, self.cfg.warehouse.path), read_only=self.read_only
                )
            except Exception as exc:
                raise OperateError(
                    f"cannot open {resolve(self.cfg, self.cfg.warehouse.path)}: {exc}. If a daemon runs on it"
                    " without an HTTP port, stop it first or give it [http] port and admin_token"
                ) from None
            self._session = DuckDBSession(self._warehouse.cursor())
        else:
            self._session = PostgresSession(app_mod.postgres_dsn(self.cfg))
        return self._session

    def __exit__(self, *exc: object) -> None:
        if self._session is not None:
            self._session.close()
        if self._warehouse is not None:
            self._warehouse.close()
