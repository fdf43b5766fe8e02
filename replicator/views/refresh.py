"""Keeping views current: create them, maintain the incremental ones in each merge, refresh the others
after merges, only when their inputs changed, in dependency order, as often as their policy allows.

State lives in the warehouse (``_replicator.views``: mode, definition hash, last refresh, dirty since), so
``replicator status`` can read each view's staleness from another process, and a restart knows which views
are behind: a view refreshed before its inputs' last applied batch is dirty.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from replicator.model import Column, TableId
from replicator.obs import metrics
from replicator.sql import quote_ident, quote_literal, quote_table
from replicator.views.graph import ViewCatalog, ViewDef
from replicator.views.ivm import IVM_SQL, IvmBuilder, analyse
from replicator.views.ivm_hook import IvmHook
from replicator.views.redshift import incremental_blockers
from replicator.views.sql import FULL_VIEW_SQL
from replicator.warehouses import STATE_SCHEMA, Dialect, MergeHook, TableState

log = structlog.get_logger(__name__)

VIEWS_TABLE = TableId(STATE_SCHEMA, "views")
# The per-table control state (replicator.ops.control.CONTROL; named here to keep views below ops).
CONTROL_TABLE = TableId(STATE_SCHEMA, "table_control")
_COLUMNS = (
    Column.of("view_schema", "text", nullable=False),
    Column.of("view_name", "text", nullable=False),
    Column.of("mode", "text", nullable=False),
    Column.of("reason", "text"),
    Column.of("policy", "text"),
    Column.of("definition_hash", "text"),
    Column.of("refreshed_at", "timestamptz"),
    Column.of("dirty_since", "timestamptz"),
    Column.of("last_seconds", "double"),
    Column.of("note", "text"),
    # Since when an input's merge is paused or failing: the view reflects it only up to then.
    Column.of("behind_since", "timestamptz"),
)


class ViewTarget(Protocol):
    """What the refresher needs of a warehouse (``SqlWarehouse`` provides it)."""

    dialect: Dialect

    def run_statements(self, statements: list[str]) -> None: ...

    def fetch(self, sql: str) -> list[tuple[Any, ...]]: ...

    def add_hook(self, hook: MergeHook) -> None: ...

    def table_states(self) -> dict[TableId, TableState]: ...


@dataclass(slots=True)
class ViewRun:
    """One view's live state. ``mode``: incremental (maintained in the merge) or the full-refresh label."""

    view: ViewDef
    mode: str
    reason: str  # why the view is not incremental ("" when it is)
    builder: IvmBuilder | None
    refreshed_at: float | None = None
    dirty_since: float | None = None
    last_seconds: float | None = None
    note: str = ""
    failed: bool = False
    reflected_commit: float | None = None  # newest source commit of its inputs at the last refresh
    behind_since: float | None = None  # since when an input's merge is paused or failing


class ViewRefresher:
    def __init__(
        self,
        catalog: ViewCatalog,
        target: ViewTarget,
        *,
        clock: Callable[[], float] = time.time,
        by_cost: bool = True,
    ):
        """``by_cost``: per batch, recompute an incremental view instead when that is measured to be
        cheaper (``IvmHook``); off only in tests of the incremental SQL."""
        self.by_cost = by_cost
        self.hook: IvmHook | None = None  # keeps the incremental views in step, from ``start``
        self.catalog = catalog
        self.target = target
        self.clock = clock
        kind = target.dialect.name
        self.full_sql = FULL_VIEW_SQL[kind]
        self.ivm_sql = IVM_SQL.get(kind)
        self.runs: dict[TableId, ViewRun] = {}
        self._pauses: dict[str, float] | None = None  # see _paused_since
        for v in catalog.views:
            builder, reason = None, "the engine refreshes materialized views itself"
            if self.ivm_sql is not None:
                plan, reason = analyse(v, catalog.base_tables(v))
                builder = IvmBuilder(plan, self.ivm_sql) if plan is not None else None
            mode = "incremental" if builder else self.full_sql.refresh_mode(v)
            self.runs[v.name] = ViewRun(v, mode, reason, builder)

    # -- start-up ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the state table, (re)build views that are new or whose definition changed (and what reads
        them), mark views whose inputs moved since their last refresh dirty, and hook into the merges."""
        self.target.run_statements(_setup_statements(self.target.dialect))
        if not self.target.fetch(_has_column("behind_since")):  # a state table from before the column
            column = f"{quote_ident('behind_since')} {self.target.dialect.column_type(_COLUMNS[-1].type)}"
            self.target.run_statements([f"ALTER TABLE {quote_table(VIEWS_TABLE)} ADD COLUMN {column}"])
        stored = {}
        for s, n, h, m, r, b in self.target.fetch(_read_stored()):
            stored[TableId(s, n)] = (h, m, r)
            if TableId(s, n) in self.runs and b is not None:
                self.runs[TableId(s, n)].behind_since = _epoch(b)  # still behind, until a round says not
        rebuild: set[TableId] = set()
        for v in self.catalog.views:
            run = self.runs[v.name]
            old = stored.get(v.name)
            if old is None or old[0] != v.definition_hash or old[1] != run.mode:
                rebuild.add(v.name)
            elif old[2] is not None:
                run.refreshed_at = _epoch(old[2])
        rebuild |= {d.name for d in self.catalog.dependents(rebuild)}  # a drop CASCADEs to readers
        for v in reversed(self.catalog.views):
            if v.name in rebuild:
                self._drop(v, stored.get(v.name, (None, None, None))[1])
        for v in self.catalog.views:
            if v.name in rebuild:
                self._create(self.runs[v.name])
        self._mark_dirty_from_ledger()
        self._save(list(self.runs.values()))
        builders = [r.builder for r in self.runs.values() if r.builder is not None and not r.failed]
        if builders:
            self.hook = IvmHook(builders, on_maintained=self._maintained, by_cost=self.by_cost)
            self.target.add_hook(self.hook)

    def _drop(self, v: ViewDef, stored_mode: str | None) -> None:
        run = self.runs[v.name]
        if stored_mode is None:
            statements = run.builder.drop() if run.builder else self.full_sql.drop(v)
        elif stored_mode == "incremental" and self.ivm_sql is not None:
            plan, _ = analyse(v, self.catalog.base_tables(v))
            statements = IvmBuilder(plan, self.ivm_sql).drop() if plan else self.full_sql.drop(v)
        else:
            statements = self.full_sql.drop(v)
        try:
            self.target.run_statements(statements)
        except Exception as exc:  # a stale object of another kind: creation will say what is in the way
            log.warning("view_drop_failed", view=str(v.name), error=str(exc))

    def _create(self, run: ViewRun) -> None:
        v = run.view
        started = time.perf_counter()
        statements = run.builder.create() if run.builder else self.full_sql.create(v)
        if not run.builder:
            blockers = incremental_blockers(v.select)
            if blockers and self.full_sql.sqlglot_dialect == "redshift":
                log.warning("view_not_incremental_on_redshift", view=str(v.name), reasons=blockers)
                run.note = "Redshift recomputes it in full: " + ", ".join(blockers)
        try:
            self.target.run_statements(statements)
        except Exception as exc:
            run.failed, run.note = True, f"could not be created: {type(exc).__name__}: {exc}"
            metrics.ERRORS.labels(stage="view", kind=type(exc).__name__).inc()
            log.error("view_create_failed", view=str(v.name), error=run.note)
            return
        run.refreshed_at, run.dirty_since = self.clock(), None
        run.last_seconds = time.perf_counter() - started
        log.info("view_created", view=str(v.name), mode=run.mode, reason=run.reason or None)

    def _mark_dirty_from_ledger(self) -> None:
        states = self.target.table_states()
        for run in self.runs.values():
            if run.mode == "incremental":
                continue
            applied = [
                _epoch(s.last_applied_at)
                for t in self.catalog.base_tables(run.view)
                if (s := states.get(t)) is not None and s.last_applied_at is not None
            ]
            newer = [a for a in applied if run.refreshed_at is None or a > run.refreshed_at]
            if newer:
                run.dirty_since = min(newer)

    # -- after merges ------------------------------------------------------------------------------------

    def _maintained(self, view: TableId, mode: str, seconds: float, why: str = "") -> None:
        """The merge hook maintained ``view`` (``incremental``) or recomputed it (``recompute``: the batch
        was too large for the incremental path, or the table was truncated); ``status`` shows why."""
        metrics.VIEW_REFRESHES.labels(view=str(view), mode=mode).inc()
        metrics.REFRESH_SECONDS.labels(view=str(view)).observe(seconds)
        run = self.runs[view]
        run.refreshed_at, run.last_seconds = self.clock(), seconds
        run.reason = f"its last batch was recomputed in the merge ({why})" if mode == "recompute" else ""

    def after_merges(
        self, changed: Set[TableId], *, blocked: Set[TableId] = frozenset(), flush: bool = False
    ) -> list[TableId]:
        """Note which views ``changed`` tables made dirty and refresh those that are due (all dirty ones
        with ``flush``), upstream views first. ``blocked``: tables whose merge is paused or failing; views
        reading them are still refreshed, and say that they read stale data. Returns the refreshed views."""
        now = self.clock()
        self._pauses = None  # read at most once a round, when a view falls behind
        touched = []
        commits = self._commit_times() if changed else {}
        for v in self.catalog.dependents(changed):
            run = self.runs[v.name]
            if run.mode != "incremental" and run.dirty_since is None:
                run.dirty_since = now
            if run.mode == "incremental":  # already current: maintained in the merge transactions
                run.reflected_commit = self._newest(run.view, commits)
            touched.append(run)
        due = {
            n
            for n, r in self.runs.items()
            if r.dirty_since is not None and not r.failed
            and (flush or r.view.policy.due(last_refresh=r.refreshed_at, now=now))
        }  # fmt: skip
        for n in list(due):  # reading a dirty upstream view would publish stale data: refresh it first
            due |= {
                u.name
                for u in self.catalog.upstream_views(self.runs[n].view)
                if self.runs[u.name].dirty_since is not None
            }
        refreshed = []
        if due and not commits:
            commits = self._commit_times()
        for v in self.catalog.views:
            if v.name in due and self._refresh(self.runs[v.name], blocked):
                self.runs[v.name].reflected_commit = self._newest(v, commits)
                refreshed.append(v.name)
        for run in self.runs.values():
            behind = sorted(str(t) for t in self.catalog.base_tables(run.view) & blocked)
            note = f"reads {', '.join(behind)}, whose merge is paused or failing" if behind else ""
            if note != run.note and not run.failed and not run.note.startswith("Redshift"):
                run.note = note
                touched.append(run)
            if bool(behind) != (run.behind_since is not None):
                # Behind since the earliest pause of its inputs (the operator's clock, as the README says),
                # not since this round noticed it: that may be long after, when a held batch came in.
                paused = [t for name in behind if (t := self._paused_since().get(name)) is not None]
                run.behind_since = min([*paused, now]) if behind else None
                touched.append(run)
            if run.reflected_commit is not None:
                # As the gauge is defined (issue 7's dashboards): newest reflected source commit to the end
                # of the last refresh; while the view waits for a refresh, to now.
                end = now if run.dirty_since is not None else (run.refreshed_at or now)
                stale = max(end - run.reflected_commit, 0.0)
                metrics.VIEW_STALENESS_SECONDS.labels(view=str(run.view.name)).set(stale)
        if touched or refreshed:
            self._save([*touched, *(self.runs[n] for n in refreshed)])
        return refreshed

    def _paused_since(self) -> dict[str, float]:
        """``schema.table`` -> when it was paused, from the control table (``replicator.ops.control``)."""
        if self._pauses is None:
            self._pauses = {}
            where = (
                f"table_schema = {quote_literal(CONTROL_TABLE.schema)}"
                f" AND table_name = {quote_literal(CONTROL_TABLE.name)}"
            )
            if self.target.fetch(f"SELECT 1 FROM information_schema.tables WHERE {where}"):
                for schema, name, since in self.target.fetch(
                    f"SELECT table_schema, table_name, since FROM {quote_table(CONTROL_TABLE)}"
                    " WHERE state = 'paused'"
                ):
                    self._pauses[f"{schema}.{name}"] = _epoch(since)
        return self._pauses

    def _commit_times(self) -> dict[TableId, float]:
        return {
            t: _epoch(s.last_commit_time)
            for t, s in self.target.table_states().items()
            if s.last_commit_time is not None
        }

    def _newest(self, view: ViewDef, commits: dict[TableId, float]) -> float | None:
        times = [commits[t] for t in self.catalog.base_tables(view) if t in commits]
        return max(times) if times else None

    def _refresh(self, run: ViewRun, blocked: Set[TableId]) -> bool:
        v = run.view
        name = str(v.name)
        started = time.perf_counter()
        try:
            self.target.run_statements(self.full_sql.refresh(v))
            mode = self.full_sql.refresh_mode(v)
            report = self.full_sql.refresh_report(v)
            if report is not None:
                mode = self.full_sql.classify(self.target.fetch(report))
        except Exception as exc:
            metrics.ERRORS.labels(stage="view", kind=type(exc).__name__).inc()
            log.error("view_refresh_failed", view=name, error=f"{type(exc).__name__}: {exc}")
            return False
        seconds = time.perf_counter() - started
        metrics.VIEW_REFRESHES.labels(view=name, mode=mode).inc()
        metrics.REFRESH_SECONDS.labels(view=name).observe(seconds)
        behind = sorted(str(t) for t in self.catalog.base_tables(v) & blocked)
        if behind:
            log.warning("view_refreshed_with_stale_input", view=name, stale_tables=behind)
        log.info("view_refreshed", view=name, mode=mode, seconds=round(seconds, 3))
        run.refreshed_at, run.dirty_since, run.last_seconds = self.clock(), None, seconds
        return True

    def _save(self, runs: list[ViewRun]) -> None:
        unique = {r.view.name: r for r in runs}
        statements = []
        for r in unique.values():
            where = _where(r.view.name)
            values = ", ".join(
                [
                    quote_literal(r.view.name.schema),
                    quote_literal(r.view.name.name),
                    quote_literal("failed" if r.failed else r.mode),
                    quote_literal(r.reason),
                    quote_literal(str(r.view.policy)),
                    quote_literal(r.view.definition_hash) if not r.failed else "NULL",
                    _ts(r.refreshed_at),
                    _ts(r.dirty_since),
                    "NULL" if r.last_seconds is None else repr(float(r.last_seconds)),
                    quote_literal(r.note),
                    _ts(r.behind_since),
                ]
            )
            statements.append(f"DELETE FROM {quote_table(VIEWS_TABLE)} WHERE {where}")
            statements.append(f"INSERT INTO {quote_table(VIEWS_TABLE)} ({_names()}) VALUES ({values})")
        if statements:
            self.target.run_statements(statements)


# -- status ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ViewStatus:
    view: str
    mode: str
    policy: str | None
    refreshed_at: str | None
    stale_seconds: float
    reason: str | None  # why not incremental
    note: str | None


def read_status(
    fetch: Callable[[str], list[tuple[Any, ...]]], *, now: datetime | None = None
) -> list[ViewStatus]:
    """Each view's mode and staleness as recorded in the warehouse; [] before the first run with views."""
    now = now or datetime.now(UTC)
    exists = f"SELECT 1 FROM information_schema.tables WHERE table_schema = {quote_literal(STATE_SCHEMA)}"
    if not fetch(f"{exists} AND table_name = {quote_literal(VIEWS_TABLE.name)}"):
        return []
    cols = "view_schema, view_name, mode, policy, refreshed_at, dirty_since, reason, note"
    if fetch(_has_column("behind_since")):
        cols += ", behind_since"
    else:
        cols += ", NULL"  # written by a version before the column; the next start adds it
    out = []
    for schema, name, mode, policy, refreshed, dirty, reason, note, behind in fetch(
        f"SELECT {cols} FROM {quote_table(VIEWS_TABLE)} ORDER BY view_schema, view_name"
    ):
        # Waiting for a refresh, or reading a table whose merge is paused or failing: whichever is older.
        since = [t for t in (dirty, behind) if t is not None]
        stale = max((now - min(since)).total_seconds(), 0.0) if since else 0.0
        out.append(
            ViewStatus(
                view=f"{schema}.{name}",
                mode=mode,
                policy=policy,
                refreshed_at=refreshed.isoformat() if refreshed is not None else None,
                stale_seconds=round(stale, 3),
                reason=reason or None,
                note=note or None,
            )
        )
    return out


# -- helpers -----------------------------------------------------------------------------------------------


def _setup_statements(dialect: Dialect) -> list[str]:
    cols = ", ".join(f"{quote_ident(c.name)} {dialect.column_type(c.type)}" for c in _COLUMNS)
    keys = f"{quote_ident('view_schema')}, {quote_ident('view_name')}"
    return [
        f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STATE_SCHEMA)}",
        f"CREATE TABLE IF NOT EXISTS {quote_table(VIEWS_TABLE)} ({cols}, PRIMARY KEY ({keys}))",
    ]


def _read_stored() -> str:
    cols = "view_schema, view_name, definition_hash, mode, refreshed_at, behind_since"
    return f"SELECT {cols} FROM {quote_table(VIEWS_TABLE)}"


def _has_column(name: str) -> str:
    """A query returning a row when the views state table has column ``name``."""
    return (
        "SELECT 1 FROM information_schema.columns"
        f" WHERE table_schema = {quote_literal(VIEWS_TABLE.schema)}"
        f" AND table_name = {quote_literal(VIEWS_TABLE.name)} AND column_name = {quote_literal(name)}"
    )


def _names() -> str:
    return ", ".join(quote_ident(c.name) for c in _COLUMNS)


def _where(name: TableId) -> str:
    return f"view_schema = {quote_literal(name.schema)} AND view_name = {quote_literal(name.name)}"


def _ts(epoch: float | None) -> str:
    if epoch is None:
        return "NULL"
    text = datetime.fromtimestamp(epoch, UTC).isoformat()
    return f"CAST({quote_literal(text)} AS TIMESTAMPTZ)"


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
