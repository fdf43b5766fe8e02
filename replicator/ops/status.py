"""Per-table status: staged and applied positions, rows, last commit time, lag, backlog."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from replicator.model import TableId
from replicator.sources.postgres import source_stops
from replicator.stage import Stager
from replicator.warehouses import Warehouse

if TYPE_CHECKING:
    from replicator.views import ViewStatus


@dataclass(frozen=True, slots=True)
class TableStatus:
    table: str
    staged_through: str | None
    applied_through: str | None
    backlog_batches: int
    backlog_rows: int
    applied_batches: int
    applied_rows: int
    last_commit_time: str | None
    last_applied_at: str | None
    lag_seconds: (
        float | None
    )  # commit of the last applied change -> now while a backlog waits, else -> applied
    error: str | None = None  # why merging this table is stopped (an incompatible schema change)
    # Why the source stopped the table (PostgreSQL: a value its declared type cannot hold): reason,
    # position, detail, since, todo, slot.
    stopped: dict[str, Any] | None = None


def collect(tables: list[TableId], stager: Stager, warehouse: Warehouse) -> list[TableStatus]:
    states = warehouse.table_states()
    schema_errors = getattr(warehouse, "schema_errors", None)  # SQL warehouses keep them in the warehouse
    errors: dict[TableId, str] = schema_errors() if schema_errors is not None else {}
    stops = source_stops(stager.store)  # the PostgreSQL source's state, in the staging store
    now = datetime.now(UTC)
    out = []
    for table in sorted(set(tables) | set(states)):
        st = states.get(table)
        pending = list(stager.pending(table))
        staged = max((m.last for m in pending), default=None) or (st.applied_through if st else None)
        lag = None
        if st is not None and st.last_commit_time is not None:
            end = now if pending or st.last_applied_at is None else st.last_applied_at
            lag = max((end - st.last_commit_time).total_seconds(), 0.0)
        out.append(
            TableStatus(
                table=str(table),
                staged_through=str(staged) if staged else None,
                applied_through=str(st.applied_through) if st and st.applied_through else None,
                backlog_batches=len(pending),
                backlog_rows=sum(m.rows for m in pending),
                applied_batches=st.batches if st else 0,
                applied_rows=st.rows if st else 0,
                last_commit_time=st.last_commit_time.isoformat() if st and st.last_commit_time else None,
                last_applied_at=st.last_applied_at.isoformat() if st and st.last_applied_at else None,
                lag_seconds=round(lag, 3) if lag is not None else None,
                error=errors.get(table),
                stopped=stops.get(table),
            )
        )
    return out


def collect_views(warehouse: Warehouse) -> list[ViewStatus]:
    """Each view's mode (incremental or how it is refreshed) and staleness, from the warehouse's records."""
    from replicator.views import read_status
    from replicator.warehouses import SqlWarehouse

    return read_status(warehouse.fetch) if isinstance(warehouse, SqlWarehouse) else []


def views_to_text(views: list[ViewStatus]) -> str:
    headers = ["view", "mode", "refresh", "last refresh", "stale s", "note"]
    body = [
        [
            v.view,
            v.mode if v.mode == "incremental" else f"{v.mode} ({v.reason})" if v.reason else v.mode,
            v.policy or "-",
            (v.refreshed_at or "-")[:19],
            f"{v.stale_seconds:.1f}",
            v.note or "",
        ]
        for v in views
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip() for b in body]
    return "\n".join(lines)


def to_json(rows: list[TableStatus]) -> str:
    return json.dumps({"tables": [asdict(r) for r in rows]}, indent=2)


def to_text(rows: list[TableStatus]) -> str:
    headers = ["table", "applied rows", "batches", "backlog", "last commit", "lag s", "applied through"]
    body = [
        [
            r.table,
            str(r.applied_rows),
            str(r.applied_batches),
            f"{r.backlog_batches} ({r.backlog_rows} rows)",
            (r.last_commit_time or "-")[:19],
            "-" if r.lag_seconds is None else f"{r.lag_seconds:.1f}",
            _short(r.applied_through),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    lines += [f"STOPPED {r.table}: {r.error}" for r in rows if r.error]
    lines += [_stop_line(r.table, r.stopped) for r in rows if r.stopped]
    return "\n".join(lines)


def _stop_line(table: str, stop: dict[str, Any]) -> str:
    since = str(stop.get("since"))[:19]
    return (
        f"STOPPED {table}: {stop.get('reason')} at {stop.get('position')} since {since}:"
        f" {stop.get('detail')}. To go on: {stop.get('todo')}"
    )


def _short(pos: str | None, width: int = 48) -> str:
    if pos is None:
        return "-"
    return pos if len(pos) <= width else "..." + pos[-(width - 3) :]
