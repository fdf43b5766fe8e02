"""What each CLI command does, on top of the composition root."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from replicator import app as app_mod
from replicator.config import Config, ConfigError, resolve
from replicator.model import TableId
from replicator.ops import actions
from replicator.ops import status as status_mod
from replicator.sql import quote_table
from replicator.stage import Stager
from replicator.storage import Quarantine, open_store

log = structlog.get_logger(__name__)


def run(cfg: Config, *, once: bool, stop: threading.Event) -> int:
    """Replicate. Returns the process exit code: 0 when stopped cleanly or (with once) when everything
    available was applied; 1 (with once) naming every table that is stopped or whose merge fails."""
    if not once:
        app_mod.install_signal_handlers(stop, cfg.pipeline.shutdown_grace_seconds)
    started = time.monotonic()
    from replicator.ops.daemon import Daemon

    # The daemon wraps the pipeline with the lease, per-table control, health and reconnects.
    daemon = Daemon(cfg, stop)
    daemon.run(once=once)
    stats = daemon.stats
    log.info(
        "pipeline_stopped",
        seconds=round(time.monotonic() - started, 2),
        captured=stats.captured,
        staged_batches=stats.staged_batches,
        applied_batches=stats.applied_batches,
        skipped_batches=stats.skipped_batches,
    )
    if once and daemon.stopped:
        for table, why in sorted(daemon.stopped.items()):
            if why.origin == "merge":
                print(f"replicator: table {table} could not be merged: {why.detail}", file=sys.stderr)
            else:
                print(
                    f"replicator: table {table} is stopped: {why.reason} at {why.where()}: {why.detail};"
                    f" to go on: {why.todo}",
                    file=sys.stderr,
                )
        return 1
    return 0


def status(cfg: Config, *, as_json: bool) -> int:
    """``replicator status``: through the running daemon, or read directly when none runs."""
    try:
        doc = actions.status(cfg)
    except actions.OperateError as exc:
        print(f"replicator: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(doc, indent=2))
        return 0
    if doc.get("note"):
        print("\n".join(status_mod.wrap(str(doc["note"]))), end="\n\n")
    names = {f.name for f in fields(status_mod.TableStatus)}
    rows = [status_mod.TableStatus(**{k: v for k, v in r.items() if k in names}) for r in doc["tables"]]
    print(status_mod.to_text(rows))
    control = status_mod.control_text(doc["control"])
    if control:
        print()
        print(control)
    if doc["views"]:
        from replicator.views import ViewStatus

        print()
        print(status_mod.views_to_text([ViewStatus(**v) for v in doc["views"]]))
    return 0


def table_action(cfg: Config, action: str, table: str, *, reason: str) -> int:
    """``replicator pause|resume|resync|retry|skip TABLE``: through the running daemon, or directly."""
    try:
        row = actions.act(cfg, action, table, reason=reason)
    except actions.OperateError as exc:
        print(f"replicator: {exc}", file=sys.stderr)
        return 1
    print(status_mod.tables_text([row]))
    if row.get("note"):
        print("\n".join(status_mod.wrap(f"note: {row['note']}")))
    return 0


def tables(cfg: Config, *, as_json: bool) -> int:
    """``replicator tables``: each table's state, reason, who set it and since when, backlog and stop."""
    try:
        rows = actions.tables(cfg)
    except actions.OperateError as exc:
        print(f"replicator: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"tables": rows}, indent=2) if as_json else status_mod.tables_text(rows))
    return 0


def check(cfg: Config) -> int:
    """Each check prints ok or what is wrong; the exit code is 1 if any failed."""
    failures = 0

    def report(what: str, fn: object) -> None:
        nonlocal failures
        try:
            detail = fn() if callable(fn) else None
            print(f"ok    {what}{f': {detail}' if detail else ''}")
        except Exception as exc:
            failures += 1
            print(f"FAIL  {what}: {type(exc).__name__}: {exc}")

    report("config", lambda: f"source={cfg.source.kind} warehouse={cfg.warehouse.kind}")
    report("schemas", lambda: f"{len(app_mod.load_schemas(cfg))} tables")

    def source_store() -> str:
        store = open_store(resolve(cfg, cfg.source.path), app_mod.s3_settings(cfg))
        n = sum(1 for _ in zip(range(1000), store.list(""), strict=False))
        return f"{store.url} ({n}{'+' if n == 1000 else ''} objects)"

    def staging_store() -> str:
        store = app_mod.open_staging(cfg)
        key = f"_check/{uuid.uuid4().hex}"
        store.put(key, b"probe")
        if store.get(key) != b"probe":
            raise RuntimeError("read back a different value")
        store.delete(key)
        return f"{store.url} (write, read, delete)"

    def warehouse() -> str:
        if cfg.warehouse.kind == "duckdb":
            path = Path(resolve(cfg, cfg.warehouse.path))
            if not path.exists():
                if not os.access(path.parent if path.parent.exists() else Path("."), os.W_OK):
                    raise PermissionError(f"cannot create {path}: folder not writable")
                return f"duckdb file {path} does not exist yet; it is created on the first run"
        wh = app_mod.open_warehouse(cfg, read_only=True)
        try:
            return f"{wh.name} ({len(wh.table_states())} tables with applied batches)"
        finally:
            wh.close()

    report("source", source_store)
    report("staging", staging_store)
    report("warehouse", warehouse)
    return 1 if failures else 0


def demo(folder: Path, *, seed: int, files: int) -> int:
    """Generate (or extend) a sample DMS feed in ``folder`` and replicate it into DuckDB."""
    from replicator.config import load
    from replicator.demo import feed

    folder.mkdir(parents=True, exist_ok=True)
    dms = folder / "dms"
    if dms.is_dir() and any(dms.iterdir()):
        # The new flushes end about now (the last one a minute ago), like a live feed's.
        start = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=files + 1)
        summary = feed.generate_more(dms, seed=seed, files=files, not_before=start)
        print(f"added {files} CDC files to the sample DMS feed in {dms}")
    else:
        # The feed's clock ends about now, so the lag figures read like a live system's.
        start = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=21)
        summary = feed.generate(dms, seed=seed, start=start)
        print(f"wrote a sample DMS feed (full load + CDC files) to {dms}")
    del summary
    config_path = folder / "replicator.toml"
    config_path.write_text(demo_config(schemas_dir()))
    cfg = load(config_path)
    started = time.monotonic()
    code = run(cfg, once=True, stop=threading.Event())
    seconds = time.monotonic() - started
    if code != 0:
        return code
    _print_demo_summary(cfg, seconds)
    print(f"\nnext: replicator status -c {config_path}   (run the demo again to replicate more changes)")
    return 0


def schemas_dir() -> Path:
    """The demo's table definitions: the repository's schemas/ folder."""
    here = Path(__file__).resolve().parent.parent / "schemas"
    if here.is_dir():
        return here
    cwd = Path.cwd() / "schemas"
    if cwd.is_dir():
        return cwd
    raise ConfigError("cannot find the schemas/ folder; run the demo from the repository root")


def demo_config(schemas: Path) -> str:
    return f"""# Written by `replicator demo`: the embedded default, no servers and no cloud account.
schemas = "{schemas}"

[source]
kind = "dms"
path = "dms"            # AWS DMS S3-target layout, here in a local folder

[source.dms]
timestamp_column_name = "dms_commit_ts"

[staging]
path = "staging"        # Parquet batches (s3://bucket/prefix in production)

[warehouse]
kind = "duckdb"
path = "warehouse.duckdb"

[batch]
max_rows = 50000
max_age_seconds = 1.0

[log]
level = "warning"
"""


def _print_demo_views(con: Any) -> None:
    """The views after the run (kept current by the merges), and the latest day of cash collected."""
    from replicator.views import read_status

    views = read_status(lambda sql: con.execute(sql).fetchall())
    if not views:
        return
    print(f"\n{'view':<36} {'mode':<12} {'rows':>6}")
    for v in views:
        result = con.execute(f"SELECT count(*) FROM {quote_table(TableId.parse(v.view))}").fetchone()
        print(f"{v.view:<36} {v.mode:<12} {result[0] if result else 0:>6}")
    cash = quote_table(TableId("reporting", "daily_cash_collected"))
    if any(v.view == "reporting.daily_cash_collected" for v in views):
        latest = con.execute(
            f"SELECT practice_id, paid_on, cash_collected, payments FROM {cash}"
            f" WHERE paid_on = (SELECT max(paid_on) FROM {cash}) ORDER BY practice_id"
        ).fetchall()
        for practice, day, amount, n in latest:
            print(f"  cash collected on {day} by practice {practice}: {amount} ({n} payments)")


def _print_demo_summary(cfg: Config, seconds: float) -> None:
    import duckdb

    schemas = app_mod.load_schemas(cfg)
    staging = app_mod.open_staging(cfg)
    wh = app_mod.open_warehouse(cfg, read_only=True)
    try:
        rows = status_mod.collect(list(schemas), Stager(staging, Quarantine(staging)), wh)
    finally:
        wh.close()
    con = duckdb.connect(resolve(cfg, cfg.warehouse.path), read_only=True)
    try:
        print(f"\nreplicated in {seconds:.1f} s into {resolve(cfg, cfg.warehouse.path)}\n")
        print(f"{'table':<24} {'rows':>8} {'changes applied':>16} {'lag s':>8}")
        for r in rows:
            result = con.execute(f"SELECT count(*) FROM {quote_table(TableId.parse(r.table))}").fetchone()
            count = result[0] if result else 0
            lag = "-" if r.lag_seconds is None else f"{r.lag_seconds:.1f}"
            print(f"{r.table:<24} {count:>8} {r.applied_changes:>16} {lag:>8}")
        _print_demo_views(con)
    finally:
        con.close()
    quarantined = Quarantine(staging).items()
    if quarantined:
        # A note may stand for many rows of one batch (``Quarantine.put_rows``): count what was set aside.
        count = sum(int(str(n.get("rows") or 1)) for n in quarantined)
        print(f"\n{count} row(s) or file(s) quarantined under {staging.url}/_quarantine/")
