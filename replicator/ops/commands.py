"""What each CLI command does, on top of the composition root."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from dataclasses import fields

import structlog

from replicator import app as app_mod
from replicator.config import Config
from replicator.obs import progress
from replicator.ops import actions
from replicator.ops import status as status_mod

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
    # On a terminal, run --once (and the demo) shows per table the changes merged of those captured.
    with progress.merging() if once else contextlib.nullcontext():
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
    if doc.get("ownership"):
        from replicator.ops.shares import ownership_text

        print()
        print(ownership_text(doc["ownership"]))
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
