"""SQL Server source start-up checks: CDC enabled, capture instances and their columns, the capture job,
and stored positions the capture instance still holds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from replicator.model import Column, TableId, TableSchema
from replicator.sources.sqlserver import queries as q
from replicator.sources.sqlserver.state import NeedsResync, SqlServerOptions, SqlServerSourceError, TableState
from replicator.sources.sqlserver.values import ZERO

log = structlog.get_logger("replicator.sources.sqlserver.source")  # the source's logger, as before the split

Query = Callable[[q.Query], list[tuple[Any, ...]]]  # runs a query, returns its rows
Scalar = Callable[[q.Query], bytes]  # runs a query, returns its one LSN (all zeros for NULL)


def check_source(
    query: Query, scalar: Scalar, tables: Mapping[TableId, TableState], options: SqlServerOptions
) -> None:
    """Raise ``SqlServerSourceError`` naming every problem: CDC off, capture instances or captured
    columns missing, capture job not running, stored positions the capture instance no longer holds."""
    problems: list[str] = []
    resync: list[str] = []
    rows = query(q.database_cdc_enabled())
    if not rows or not rows[0][1]:
        name = rows[0][0] if rows else "?"
        raise SqlServerSourceError(
            f"change data capture is not enabled for database {name}: run EXEC sys.sp_cdc_enable_db"
        )
    instances = {r[0]: (r[1], r[2], bool(r[3])) for r in query(q.capture_instances())}
    for tid, t in tables.items():
        found = instances.get(t.ci)
        if found is None or (found[0], found[1]) != (tid.schema, tid.name):
            problems.append(
                f"{tid}: no capture instance {t.ci!r} on this table; run EXEC sys.sp_cdc_enable_table "
                f"@source_schema = N'{tid.schema}', @source_name = N'{tid.name}', "
                f"@role_name = NULL, @capture_instance = N'{t.ci}'"
                + (", @supports_net_changes = 1" if options.net_changes else "")
                + " (or name its capture instance in source.sqlserver.capture_instances)"
            )
            continue
        if options.net_changes and not found[2]:
            problems.append(f"{tid}: capture instance {t.ci!r} does not support net changes")
        problems.extend(compare_schema(query, t))
        captured = {r[0] for r in query(q.captured_columns(t.ci))}
        missing = [c for c in t.schema.column_names if c not in captured]
        if missing:
            problems.append(
                f"{tid}: capture instance {t.ci!r} does not capture column(s) {missing}; columns added "
                "after a capture instance was created need a new capture instance"
            )
        elif t.next_lsn is not None and t.stopped is None:  # a stopped table waits for the operator
            try:
                check_not_expired(scalar, t, t.next_lsn)
            except NeedsResync as exc:
                resync.append(str(exc))
    if options.check_capture_job:
        jobs = query(q.capture_job())
        if not jobs:
            problems.append("the database has no CDC capture job (msdb.dbo.cdc_jobs): run EXEC "
                            "sys.sp_cdc_add_job @job_type = N'capture'")  # fmt: skip
        elif not any(r[1] for r in jobs):
            problems.append("the CDC capture job is not running: start SQL Server Agent, or EXEC "
                            "sys.sp_cdc_start_job @job_type = N'capture'")  # fmt: skip
    if problems:
        raise SqlServerSourceError("SQL Server source: " + "; ".join(problems + resync))
    if resync:
        raise NeedsResync("SQL Server source: " + "; ".join(resync))


def compare_schema(query: Query, t: TableState) -> list[str]:
    """Catalog columns the source table lacks are problems; differing types are logged only (the
    catalog may widen a type on purpose)."""
    source = {r[0]: r for r in query(q.table_columns(t.schema.table))}
    if not source:
        return [f"{t.schema.table}: no such table in the source database"]
    problems = []
    for col in t.schema.columns:
        r = source.get(col.name)
        if r is None:
            problems.append(f"{t.schema.table}: column {col.name} is not in the source table")
            continue
        try:
            mapped = q.logical_type(r[1], r[2], r[3], r[4])
        except ValueError as exc:
            problems.append(f"{t.schema.table}: column {col.name}: {exc}")
            continue
        if mapped != col.type:
            log.warning("sqlserver_type_differs", table=str(t.schema.table), column=col.name,
                        source=str(mapped), catalog=str(col.type))  # fmt: skip
    return problems


def source_schema(query: Query, table: TableId) -> TableSchema:
    """The table as SQL Server describes it (INFORMATION_SCHEMA), in replicator types."""
    rows = query(q.table_columns(table))
    if not rows:
        raise SqlServerSourceError(f"{table}: no such table in the source database")
    pk = tuple(r[0] for r in query(q.primary_key(table)))
    cols = tuple(Column(r[0], q.logical_type(r[1], r[2], r[3], r[4]), r[5] == "YES") for r in rows)
    return TableSchema(table, cols, pk)


def check_not_expired(scalar: Scalar, t: TableState, lsn: bytes) -> bytes:
    """The oldest LSN ``t``'s capture instance holds; ``NeedsResync`` if ``lsn`` is older than it."""
    low = scalar(q.min_lsn(t.ci))
    if low == ZERO:
        raise SqlServerSourceError(f"{t.schema.table}: capture instance {t.ci!r} no longer exists")
    if lsn < low:
        raise NeedsResync(
            f"{t.schema.table} needs a resync: its position (LSN 0x{lsn.hex()}) is older than the oldest "
            f"change capture instance {t.ci!r} still holds (0x{low.hex()}), so changes were cleaned up "
            f"before they were read. Truncate the target table, delete {t.key} from the staging store "
            "and restart: the table is then loaded again from a fresh snapshot"
        )
    return low
