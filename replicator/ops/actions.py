"""The operator's actions (``status``, ``tables``, ``pause``, ``resume``, ``resync``, ``retry``, ``skip``), in
one place for the command line and the daemon's admin API.

``decide`` is what an action does to a table's control row, and what it refuses (``resume`` on a table its
source stopped, ``skip`` of a stop that cannot be skipped...); ``status_rows`` and ``table_rows`` build
what ``status`` and ``tables`` show. The daemon's admin API (``replicator.ops.daemon``) calls them with its
own connections and its source's live stops; the CLI functions below call them directly when no daemon
runs, and the daemon's admin API when one does.

An embedded DuckDB file may be opened by one process only: while a daemon runs on it, the CLI goes through
the daemon's admin API (found through the ``<warehouse>.daemon.json`` file the daemon writes, with the admin
token of the same config). Otherwise, and always for a PostgreSQL warehouse (which takes concurrent
writers), the CLI reads and writes the warehouse itself; a running daemon picks a change up at its next
round, and a daemon started later finds it there.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from replicator import app as app_mod
from replicator.config import Config, resolve
from replicator.model import TableId
from replicator.ops import shares
from replicator.ops import status as status_mod
from replicator.ops.control import (
    ACTIVE,
    PAUSED,
    RETRY,
    SKIP,
    ControlStore,
    DuckDBSession,
    PostgresSession,
    SqlSession,
    TableControl,
    default_control,
)
from replicator.ops.lease import clock_for
from replicator.ops.stops import MERGE, Stop, persisted
from replicator.stage import Stager
from replicator.storage import Quarantine


class OperateError(RuntimeError):
    """Worded for the operator; the CLI prints it and exits 1."""


class Refused(OperateError):
    """The action does not apply to the table as it is now (the admin API answers 409)."""


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a bare container
        user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}"


# -- what an action does, wherever it comes from -----------------------------------------------------------


def decide(
    store: ControlStore, action: str, table: TableId, *, reason: str, who: str, stop: Stop | None
) -> tuple[TableControl, str]:
    """Check ``action`` against the table's state and stop, write the control row, and return the new row
    and a note for the operator (empty when there is nothing to add). Raises ``Refused``."""
    current = store.get(table)
    note = _refusal_or_note(action, table, current, stop)
    return store.request(action, table, reason=reason, who=who), note


def _refusal_or_note(action: str, table: TableId, current: TableControl, stop: Stop | None) -> str:
    if action in (RETRY, SKIP):
        if stop is None:
            raise Refused(f"{table} is not stopped: there is nothing to {action}")
        if stop.origin == MERGE:
            raise Refused(
                f"{table}'s merge fails ({stop.detail}); it is retried each round by itself and cannot be"
                f" skipped: {stop.todo}"
            )
        if action not in stop.actions:
            raise Refused(
                f"{table} was stopped by its {stop.source} source, which cannot {action} it: {stop.todo}"
            )
        if current.state != ACTIVE:
            return f"{table} was {current.state}; it is active again with the {action}"
        return ""
    if action == "resume" and stop is not None and stop.origin != MERGE:
        how = (
            f"use `replicator retry {table}` once the file or setting is fixed, or `replicator skip {table}`"
            " to leave what stopped it in the quarantine"
            if RETRY in stop.actions
            else stop.todo
        )
        message = (
            f"{table} is stopped by its source: {stop.reason} at {stop.where()}. Resume does not go past"
            f" that: {how}"
        )
        if current.state != PAUSED:
            raise Refused(message)
        return f"resumed; but {message}"
    return ""


def table_rows(
    tables: list[TableId],
    controls: Mapping[TableId, TableControl],
    stager: Stager,
    stops: Mapping[TableId, Stop],
    errors: Mapping[TableId, str],
) -> list[dict[str, Any]]:
    """The rows of ``replicator tables`` / ``GET /tables``."""
    every = status_mod.all_stops(stops, errors)
    return [
        status_mod.table_row(
            t,
            controls.get(t, default_control(t)),
            sum(1 for _ in stager.pending(t)),
            every.get(t),
            errors.get(t),
        )
        for t in sorted(tables)
    ]


# -- the command line's side: through a running daemon, or on its own ---------------------------------------


def status(cfg: Config) -> dict[str, Any]:
    """``replicator status --json``'s document."""
    url = daemon_url(cfg)
    if url is not None:
        doc: dict[str, Any] = _call(cfg, "GET", f"{url}/status")
        return doc
    schemas = app_mod.load_schemas(cfg)
    staging = app_mod.open_staging(cfg)
    stager = Stager(staging, Quarantine(staging))
    if not _warehouse_exists(cfg):
        rows = status_mod.collect(list(schemas), stager, _Empty(), errors={})
        doc = status_mod.document(rows, [], [])
        doc["note"] = (
            f"there is no warehouse yet: {resolve(cfg, cfg.warehouse.path)} is created by the first"
            " `replicator run`"
        )
        return doc
    stops = persisted(staging, schemas)
    with _Offline(cfg, read_only=True) as off:
        controls = off.controls()
        errors = status_mod.merge_errors(off.warehouse)
        rows = status_mod.collect(
            list(schemas), stager, off.warehouse, stops=stops, errors=errors, controls=controls
        )
        views = status_mod.collect_views(getattr(off.warehouse, "fetch", None))
        owned = _ownership(cfg, off.session)
    doc = status_mod.document(rows, table_rows(list(schemas), controls, stager, stops, errors), views)
    if owned is not None:
        doc["ownership"] = owned
    return doc


def _ownership(cfg: Config, session: SqlSession) -> list[dict[str, Any]] | None:
    """Scale-out (``lease.mode`` shared): which task owns what, from the claims; None otherwise."""
    if not shares.shared(cfg):
        return None
    clock = clock_for(cfg.warehouse.kind)
    store = shares.ShareStore(session, scope=cfg.lease.scope, owner="", ttl_seconds=0, endpoint="", now=clock)
    try:
        return shares.ownership(store, shares.config_units(cfg))
    except Exception:  # no task ever ran: no claims table yet
        return [{"unit": u.name, "tables": sorted(map(str, u.tables)), "owner": None, "endpoint": None,
                 "token": None} for u in shares.config_units(cfg)]  # fmt: skip


def tables(cfg: Config) -> list[dict[str, Any]]:
    """Every configured table's state, backlog and stop (through the daemon when one runs)."""
    url = daemon_url(cfg)
    if url is not None:
        rows: list[dict[str, Any]] = _call(cfg, "GET", f"{url}/tables")["tables"]
        return rows
    schemas = app_mod.load_schemas(cfg)
    staging = app_mod.open_staging(cfg)
    controls: dict[TableId, TableControl] = {}
    errors: dict[TableId, str] = {}
    if _warehouse_exists(cfg):
        with _Offline(cfg, read_only=True) as off:
            controls, errors = off.controls(), status_mod.merge_errors(off.warehouse)
    return table_rows(
        list(schemas), controls, Stager(staging, Quarantine(staging)), persisted(staging, schemas), errors
    )


def act(cfg: Config, action: str, table_name: str, *, reason: str) -> dict[str, Any]:
    """One action on one table; returns its new row of ``tables`` (with ``note`` when there is one)."""
    table = _table(cfg, table_name)
    url = daemon_url(cfg)
    if url is not None:
        body = json.dumps({"reason": reason, "who": who()}).encode()
        row: dict[str, Any] = _call(cfg, "POST", f"{url}/tables/{table}/{action}", body)
        return row
    schemas = app_mod.load_schemas(cfg)
    staging = app_mod.open_staging(cfg)
    stops = persisted(staging, schemas)
    with _Offline(cfg, read_only=False) as off:
        store = ControlStore(off.session)
        store.ensure()
        _, note = decide(store, action, table, reason=reason, who=who(), stop=stops.get(table))
        errors = status_mod.merge_errors(off.warehouse)
        controls = store.read_all()
    row = table_rows([table], controls, Stager(staging, Quarantine(staging)), stops, errors)[0]
    if note:
        row["note"] = note
    if action in (RETRY, SKIP):
        row["note"] = (note + "; " if note else "") + f"the {action} is applied by the next `replicator run`"
    return row


# -- finding a running daemon -------------------------------------------------------------------------------


def endpoint_file(cfg: Config) -> Path | None:
    """Where a daemon on an embedded DuckDB file says how to reach it (the CLI cannot open the file then)."""
    if cfg.warehouse.kind != "duckdb":
        return None
    return Path(resolve(cfg, cfg.warehouse.path) + ".daemon.json")


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
            "a daemon is running on this warehouse and only its admin API may read or change it: set"
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
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = str(json.loads(detail)["error"])
        raise OperateError(
            detail if exc.code == 409 else f"the daemon answered {exc.code}: {detail}"
        ) from None


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


class _Empty:
    """No warehouse yet: nothing applied."""

    def table_states(self) -> dict[TableId, Any]:
        return {}


class _Offline:
    """The warehouse opened by this process (no daemon runs on it), and a control session beside it."""

    def __init__(self, cfg: Config, *, read_only: bool) -> None:
        self.cfg, self.read_only = cfg, read_only
        self.warehouse: Any = None
        self.session: SqlSession = PostgresSession("")

    def __enter__(self) -> _Offline:
        path = resolve(self.cfg, self.cfg.warehouse.path)
        try:
            self.warehouse = app_mod.open_warehouse(self.cfg, read_only=self.read_only)
        except Exception as exc:
            if self.cfg.warehouse.kind != "duckdb":
                raise
            raise OperateError(
                f"cannot open {path}: {exc}. If a daemon runs on it without an HTTP port, stop it first or"
                " give it [http] port and admin_token"
            ) from None
        cursor = getattr(self.warehouse, "cursor", None)
        if self.cfg.warehouse.kind == "duckdb" and cursor is not None:
            self.session = DuckDBSession(cursor())
        else:
            self.session = PostgresSession(app_mod.postgres_dsn(self.cfg))
        return self

    def controls(self) -> dict[TableId, TableControl]:
        store = ControlStore(self.session)
        return store.read_all() if store.exists() else {}

    def __exit__(self, *exc: object) -> None:
        self.session.close()
        if self.warehouse is not None:
            self.warehouse.close()
