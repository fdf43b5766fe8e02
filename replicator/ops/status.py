"""Per-table status: state, changes applied, backlog, lag, positions, and why a table is stopped; and the
text an operator reads (``replicator status``, ``replicator tables``, ``pause``/``resume``...).

Everything here works from plain inputs (the warehouse's progress, the staged batches, the control rows and
the stops), so the CLI without a daemon and the daemon's admin API build the very same rows.
"""

from __future__ import annotations

import io
import shutil
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rich.console import Console
from rich.table import Table

from replicator.model import TableId
from replicator.ops.control import TableControl, default_control
from replicator.ops.stops import Stop, from_merge, persisted, readable_position
from replicator.sql import quote_literal
from replicator.stage import Stager
from replicator.warehouses import Dialect, TableState, evolution, read_table_states

if TYPE_CHECKING:
    from replicator.views import ViewStatus

WIDTH = 120  # no line of text is longer, off a terminal (on one: its width)
STOPPED = "stopped"


class Progress(Protocol):
    """What status reads from the warehouse: a warehouse itself, or ``SessionReader``."""

    def table_states(self) -> dict[TableId, TableState]: ...


class SessionReader:
    """The warehouse's progress through another connection (the daemon's admin session, on its own thread,
    while the loop merges on the warehouse's)."""

    def __init__(self, query: Callable[[str], list[tuple[Any, ...]]], dialect: Dialect) -> None:
        self.query, self.dialect = query, dialect

    def table_states(self) -> dict[TableId, TableState]:
        return read_table_states(self.query, self.dialect)

    def schema_errors(self) -> dict[TableId, str]:
        """``SqlWarehouse.schema_errors``: the merge failures recorded in the warehouse."""
        table = evolution.ERRORS
        where = f"table_schema = {quote_literal(table.schema)} AND table_name = {quote_literal(table.name)}"
        if not self.query(f"SELECT 1 FROM information_schema.tables WHERE {where}"):
            return {}
        return {TableId(s, n): r for s, n, r in self.query(evolution.read_errors())}


@dataclass(frozen=True, slots=True)
class TableStatus:
    table: str
    state: str  # active, paused, resyncing, or stopped (by its source or a failing merge)
    staged_through: str | None
    applied_through: str | None
    backlog_batches: int
    backlog_rows: int
    applied_batches: int
    applied_changes: int  # changes (inserts, updates, deletes) applied, not rows in the table
    last_commit_time: str | None
    last_applied_at: str | None
    lag_seconds: (
        float | None
    )  # commit of the last applied change -> now while a backlog waits, else -> applied
    error: str | None = None  # why merging this table fails (an incompatible schema change, a constraint)
    stopped: dict[str, Any] | None = None  # ``Stop.to_dict()``: why the table waits for an operator


def merge_errors(warehouse: Any) -> dict[TableId, str]:
    """Merge failures the warehouse records (SQL warehouses; others record none)."""
    schema_errors = getattr(warehouse, "schema_errors", None)
    found: dict[TableId, str] = schema_errors() if schema_errors is not None else {}
    return dict(found)


def effective_state(control: TableControl, stop: Stop | None) -> str:
    return STOPPED if stop is not None else control.state


def all_stops(source_stops: Mapping[TableId, Stop], errors: Mapping[TableId, str]) -> dict[TableId, Stop]:
    """A source's stop first (it is what must be fixed), else a failing merge."""
    out = {t: from_merge(str(t), e) for t, e in errors.items()}
    out.update(source_stops)
    return out


def collect(
    tables: list[TableId],
    stager: Stager,
    warehouse: Progress,
    *,
    stops: Mapping[TableId, Stop] | None = None,
    errors: Mapping[TableId, str] | None = None,
    controls: Mapping[TableId, TableControl] | None = None,
) -> list[TableStatus]:
    """One row per table. ``stops`` default to those persisted in the staging store, ``errors`` to the
    merge failures the warehouse recorded."""
    states = warehouse.table_states()
    errors = merge_errors(warehouse) if errors is None else errors
    source_stops = persisted(stager.store, set(tables) | set(states)) if stops is None else stops
    every = all_stops(source_stops, errors)
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
        stop = every.get(table)
        control = (controls or {}).get(table, default_control(table))
        out.append(
            TableStatus(
                table=str(table),
                state=effective_state(control, stop),
                staged_through=str(staged) if staged else None,
                applied_through=str(st.applied_through) if st and st.applied_through else None,
                backlog_batches=len(pending),
                backlog_rows=sum(m.rows for m in pending),
                applied_batches=st.batches if st else 0,
                applied_changes=st.rows if st else 0,
                last_commit_time=st.last_commit_time.isoformat() if st and st.last_commit_time else None,
                last_applied_at=st.last_applied_at.isoformat() if st and st.last_applied_at else None,
                lag_seconds=round(lag, 3) if lag is not None else None,
                error=errors.get(table),
                stopped=stop.to_dict() if stop is not None else None,
            )
        )
    return out


def collect_views(fetch: Callable[[str], list[tuple[Any, ...]]] | None) -> list[ViewStatus]:
    """Each view's mode (incremental or how it is refreshed) and staleness, from the warehouse's records."""
    from replicator.views import read_status

    return read_status(fetch) if fetch is not None else []


def table_row(
    table: TableId, control: TableControl, backlog: int, stop: Stop | None, error: str | None
) -> dict[str, Any]:
    """One row of ``replicator tables`` and ``GET /tables``."""
    row = control.to_dict()
    row["control_state"] = control.state
    row["state"] = effective_state(control, stop)
    row["backlog_batches"] = backlog
    row["error"] = error
    row["stopped"] = stop.to_dict() if stop is not None else None
    return row


def document(
    rows: Sequence[TableStatus], controls: Sequence[dict[str, Any]], views: Sequence[ViewStatus]
) -> dict[str, Any]:
    """``status --json`` and ``GET /status``."""
    return {
        # ``applied_rows``: the old name of ``applied_changes``, kept for scripts that read it.
        "tables": [{**asdict(r), "applied_rows": r.applied_changes} for r in rows],
        "control": list(controls),
        "views": [asdict(v) for v in views],
    }


# -- text -------------------------------------------------------------------------------------------------


def when(iso: Any) -> str:
    """An ISO 8601 time as ``2026-12-06 14:04:47Z`` (UTC, seconds); ``-`` for none."""
    if not iso:
        return "-"
    try:
        t = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def width() -> int:
    """The terminal's width when printing to one (at least 60), else ``WIDTH``."""
    if sys.stdout.isatty():
        return max(60, shutil.get_terminal_size((WIDTH, 24)).columns)
    return WIDTH


def _grid(headers: list[str], body: list[list[str]], right: set[int] | None = None) -> list[str]:
    """Columns drawn by rich's table renderer, to ``width()``: on a narrow terminal the cells wrap between
    words, the names in the first column stay whole."""
    right = right or set()
    grid = Table(box=None, pad_edge=False, padding=(0, 1), show_edge=False, header_style="", expand=False)
    mins = [max((len(b[0]) for b in body), default=len(headers[0]))]  # names: whole, on one line
    mins += [_longest_word([h, *(b[i] for b in body)]) for i, h in enumerate(headers) if i > 0]
    # Cells wrap between words; only when even a word a line does not fit are words cut (with an ellipsis).
    words_fit = sum(mins) + 2 * (len(mins) - 1) <= width()
    for i, h in enumerate(headers):
        justify: Literal["left", "right"] = "right" if i in right else "left"
        least = mins[i] if i == 0 or words_fit else None
        grid.add_column(h, justify=justify, no_wrap=i == 0, overflow="ellipsis", min_width=least)
    for b in body:
        grid.add_row(*b)
    out = io.StringIO()
    console = Console(file=out, width=width(), color_system=None, highlight=False, emoji=False, markup=False)
    console.print(grid)
    return [line.rstrip() for line in out.getvalue().splitlines()]


def _longest_word(texts: list[str]) -> int:
    return max((len(w) for t in texts for w in t.split()), default=1)


def wrap(first: str, rest: str = "") -> list[str]:
    """``first`` then ``rest`` on lines of at most ``width()``, the continuation indented."""
    text = first + (f" {rest}" if rest else "")
    return textwrap.wrap(text, width(), subsequent_indent="    ", break_on_hyphens=False) or [""]


def stop_lines(table: str, stop: Mapping[str, Any]) -> list[str]:
    """``STOPPED table: reason at position since when``, then the detail, the file, and how to go on."""
    if stop.get("origin") == "merge":
        lines = wrap(f"STOPPED {table}: {stop.get('detail')}")
    else:
        where = stop.get("position") or stop.get("object") or "-"
        lines = wrap(f"STOPPED {table}: {stop.get('reason')} at {where} since {when(stop.get('since'))}")
        lines += wrap(f"    {stop.get('detail')}")
        if stop.get("object"):
            lines += wrap(f"    file: {stop['object']}")
    return [*lines, *wrap(f"    to go on: {stop.get('todo')}")]


def to_text(rows: list[TableStatus]) -> str:
    headers = ["table", "state", "changes applied", "backlog", "backlog rows", "lag s", "last commit"]
    body = [
        [
            r.table,
            r.state.upper() if r.state == STOPPED else r.state,
            str(r.applied_changes),
            str(r.backlog_batches),
            str(r.backlog_rows),
            "-" if r.lag_seconds is None else f"{r.lag_seconds:.1f}",
            when(r.last_commit_time),
        ]
        for r in rows
    ]
    lines = _grid(headers, body, right={2, 3, 4, 5})
    positions = [
        [r.table, readable_position(r.applied_through) or "-", readable_position(r.staged_through) or "-"]
        for r in rows
    ]
    lines += ["", *_grid(["table", "applied through", "staged through"], positions)]
    for r in rows:
        if r.stopped:
            lines += stop_lines(r.table, r.stopped)
    return "\n".join(lines)


def tables_text(rows: Sequence[dict[str, Any]]) -> str:
    """``replicator tables`` (and what ``pause``/``resume``... print): one line per table, then why each
    stopped table is stopped."""
    headers = ["table", "state", "backlog", "since", "by", "reason"]
    body = []
    for r in rows:
        state = str(r["state"])
        state = state.upper() if state == STOPPED else state
        if r.get("resync_phase"):
            state += f", {r['resync_phase']}"
        if r.get("control_state") not in (None, "active", r["state"]):
            state += f", {r['control_state']}"
        body.append(
            [
                str(r["table"]), state,
                "-" if r.get("backlog_batches") is None else str(r["backlog_batches"]),
                when(r.get("since")), str(r.get("changed_by") or "-"), str(r.get("reason") or "-"),
            ]
        )  # fmt: skip
    lines = _grid(headers, body, right={2})
    for r in rows:
        if r.get("stopped"):
            lines += stop_lines(str(r["table"]), r["stopped"])
    return "\n".join(lines)


def control_text(controls: Sequence[dict[str, Any]]) -> str:
    """The tables an operator paused or is resyncing, for ``replicator status``."""
    lines = []
    for r in controls:
        if r.get("control_state", r.get("state")) == "active" and not r.get("resync_phase"):
            continue
        state = str(r.get("control_state") or r.get("state"))
        phase = f", {r['resync_phase']}" if r.get("resync_phase") else ""
        lines += wrap(
            f"{state}{phase} {r['table']} since {when(r.get('since'))} by {r.get('changed_by') or '-'}:",
            str(r.get("reason") or "-"),
        )
    return "\n".join(lines)


def views_to_text(views: list[ViewStatus]) -> str:
    """One line per view, then why a view is not incremental and any note, each on lines of its own."""
    headers = ["view", "mode", "refresh", "last refresh", "stale s"]
    body = [[v.view, v.mode, v.policy or "-", when(v.refreshed_at), f"{v.stale_seconds:.1f}"] for v in views]
    lines = _grid(headers, body, right={4})
    if any(v.reason or v.note for v in views):
        lines.append("")
    for v in views:
        if v.reason and v.mode == "incremental":  # why its last batch was recomputed instead
            lines += wrap(f"{v.view}: {v.reason}")
        elif v.reason:
            lines += wrap(f"{v.view} is {v.mode} because {v.reason}")
        if v.note:
            lines += wrap(f"{v.view}: {v.note}")
    return "\n".join(lines)
