"""The ledger (one row per applied batch, written in the merge transaction) and the per-table progress rows:
their shape and statements, the same text for every SQL warehouse (``now`` is the dialect's current time)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from replicator.model import Column, Manifest, TableId
from replicator.sql import quote_ident, quote_literal, quote_table
from replicator.warehouses.base import STATE_SCHEMA

LEDGER = TableId(STATE_SCHEMA, "batches")  # one row per applied batch; its primary key makes replays no-ops
PROGRESS = TableId(STATE_SCHEMA, "tables")  # one row per target table: what table_states() reads

LEDGER_COLUMNS = (
    Column.of("batch_id", "varchar(64)", nullable=False),
    Column.of("table_schema", "text", nullable=False),
    Column.of("table_name", "text", nullable=False),
    Column.of("first_position", "text", nullable=False),
    Column.of("last_position", "text", nullable=False),
    Column.of("rows", "bigint", nullable=False),
    Column.of("inserts", "bigint", nullable=False),
    Column.of("updates", "bigint", nullable=False),
    Column.of("deletes", "bigint", nullable=False),
    Column.of("min_commit_time", "timestamptz"),
    Column.of("max_commit_time", "timestamptz"),
    Column.of("applied_at", "timestamptz", nullable=False),
)
PROGRESS_COLUMNS = (
    Column.of("table_schema", "text", nullable=False),
    Column.of("table_name", "text", nullable=False),
    Column.of("applied_through", "text", nullable=False),
    Column.of("batches", "bigint", nullable=False),
    Column.of("rows", "bigint", nullable=False),
    Column.of("last_commit_time", "timestamptz"),
    Column.of("last_applied_at", "timestamptz", nullable=False),
)
BATCH_ID = quote_ident("batch_id")
TABLE_KEY = f"{quote_ident('table_schema')}, {quote_ident('table_name')}"


def lookup(batch_id: str) -> str:
    """A query returning a row when ``batch_id`` was applied."""
    return f"SELECT 1 FROM {quote_table(LEDGER)} WHERE {BATCH_ID} = {quote_literal(batch_id)}"


def record(m: Manifest, *, now: str) -> list[str]:
    """Insert the ledger row and move the table's progress row forward (update, else insert).

    UPDATE-then-INSERT-WHERE-NOT-EXISTS instead of ``ON CONFLICT``: it is the form every target
    accepts, and the apply transaction holds the table, so the two cannot race.
    """
    names = _idents([c.name for c in LEDGER_COLUMNS])
    values = ", ".join(
        [
            quote_literal(m.batch_id),
            quote_literal(m.table.schema),
            quote_literal(m.table.name),
            quote_literal(m.first.value),
            quote_literal(m.last.value),
            *(str(int(n)) for n in (m.rows, m.inserts, m.updates, m.deletes)),
            _timestamp(m.min_commit_time),
            _timestamp(m.max_commit_time),
            now,
        ]
    )
    progress = quote_table(PROGRESS)
    schema_, name = quote_literal(m.table.schema), quote_literal(m.table.name)
    where = f"{_q('table_schema')} = {schema_} AND {_q('table_name')} = {name}"
    last, commit, rows = quote_literal(m.last.value), _timestamp(m.max_commit_time), int(m.rows)
    pnames = _idents([c.name for c in PROGRESS_COLUMNS])
    sets = ", ".join(
        [
            f"{_q('applied_through')} = {last}",
            f"{_q('batches')} = {_q('batches')} + 1",
            f"{_q('rows')} = {_q('rows')} + {rows}",
            f"{_q('last_commit_time')} = COALESCE({commit}, {_q('last_commit_time')})",
            f"{_q('last_applied_at')} = {now}",
        ]
    )
    return [
        f"INSERT INTO {quote_table(LEDGER)} ({names}) VALUES ({values})",
        f"UPDATE {progress} SET {sets} WHERE {where}",
        f"INSERT INTO {progress} ({pnames}) SELECT {schema_}, {name}, {last}, 1, {rows}, {commit},"
        f" {now} WHERE NOT EXISTS (SELECT 1 FROM {progress} WHERE {where})",
    ]


def progress_exists() -> str:
    """Query returning a row when the progress table exists (a never set-up warehouse has none)."""
    schema, name = quote_literal(PROGRESS.schema), quote_literal(PROGRESS.name)
    where = f"table_schema = {schema} AND table_name = {name}"
    return f"SELECT 1 FROM information_schema.tables WHERE {where}"


def progress_rows() -> str:
    """Every progress row, in ``PROGRESS_COLUMNS`` order."""
    return f"SELECT {_idents([c.name for c in PROGRESS_COLUMNS])} FROM {quote_table(PROGRESS)}"


def _idents(names: Sequence[str]) -> str:
    return ", ".join(quote_ident(n) for n in names)


def _q(name: str) -> str:
    return quote_ident(name)


def _timestamp(value: datetime | None) -> str:
    if value is None:
        return "NULL"
    if value.tzinfo is None:
        raise ValueError(f"commit time {value!r} has no time zone")
    return f"CAST({quote_literal(value.isoformat())} AS TIMESTAMPTZ)"
