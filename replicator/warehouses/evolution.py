"""Schema evolution: bring a target table to the shape of the batch about to be merged into it.

Each staged batch carries its own shape (``Manifest.schema()``). Before a batch is merged, its shape is
compared with the shape the target was last given, which the warehouse records in ``_replicator.columns``
(logical types, so the comparison is the same on every engine, whatever each one's DDL spells):

- a column the target lacks is added (``ALTER TABLE ... ADD COLUMN``, nullable: existing rows get NULL);
- a wider type (longer varchar, more numeric digits, int -> bigint, real -> double) widens the column where
  the engine can (``Dialect.widen_kinds``); a narrower one simply fits and changes nothing;
- any other change (text -> integer, timestamp -> timestamptz, a widening the engine cannot do) raises
  ``IncompatibleSchemaChange``, which stops that table only; the reason is kept in
  ``_replicator.schema_errors`` so ``replicator status`` shows it from another process;
- a column the batch lacks (dropped at the source) stays in the target; upserts set it to NULL, or leave it
  as it was with ``dropped_columns = "keep"``.

Engines whose ``ALTER ... TYPE`` commits implicitly (Redshift) run it on its own, outside any transaction;
everything else (added columns and the record) commits in one transaction before the merge transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from replicator.model import Column, TableId, TableSchema
from replicator.sql import quote_ident, quote_literal, quote_table
from replicator.values import parse_type
from replicator.values import widening as compare  # how a batch's column type goes into the target's
from replicator.warehouses.base import STATE_SCHEMA
from replicator.warehouses.dialect import Dialect

COLUMNS = TableId(STATE_SCHEMA, "columns")  # the shape each target table was last given
ERRORS = TableId(STATE_SCHEMA, "schema_errors")  # why a table is stopped, for `replicator status`


class IncompatibleSchemaChange(Exception):
    """The batch's shape cannot be applied to the target without losing data. Stops that table only."""


@dataclass(frozen=True, slots=True)
class Diff:
    add: tuple[Column, ...] = ()
    widen: tuple[tuple[Column, Column], ...] = ()  # (current, widened) pairs
    incompatible: tuple[str, ...] = ()  # one reason per column
    dropped: tuple[str, ...] = ()  # in the target, not in the batch
    record: tuple[Column, ...] = field(default=())  # the target's shape once evolved

    @property
    def changes_ddl(self) -> bool:
        return bool(self.add or self.widen)


def diff(current: Sequence[Column], wanted: TableSchema, dialect: Dialect) -> Diff:
    """Plan the evolution of a target whose recorded shape is ``current`` to take ``wanted``'s batches."""
    by_name = {c.name: c for c in current}
    add, widen, bad = [], [], []
    record = {c.name: c for c in current}
    for col in wanted.columns:
        cur = by_name.get(col.name)
        if cur is None:
            add.append(Column(col.name, col.type, nullable=True, default=col.default))
            record[col.name] = add[-1]
            continue
        verdict, target = compare(cur.type, col.type)
        if verdict == "incompatible":
            bad.append(f"column {col.name} changed from {cur.type} to {col.type}: not every value fits")
        elif verdict == "widen":
            widened = Column(cur.name, target, cur.nullable)
            same_ddl = dialect.column_type(cur.type) == dialect.column_type(target)
            if not same_ddl and (dialect.alter_type is None or target.kind not in dialect.widen_kinds):
                bad.append(
                    f"column {col.name} widened from {cur.type} to {col.type}, which {dialect.name}"
                    " cannot do in place (ALTER COLUMN TYPE)"
                )
            elif not same_ddl:
                widen.append((cur, widened))
            record[col.name] = widened
    dropped = tuple(c.name for c in current if c.name not in set(wanted.column_names))
    return Diff(tuple(add), tuple(widen), tuple(bad), dropped, tuple(record.values()))


# -- SQL (pure) ------------------------------------------------------------------------------------------


def setup(d: Dialect) -> list[str]:
    """Idempotent DDL of the record tables (after ``Dialect.setup``, which creates the schema)."""
    text, big = d.types["text"], d.types["bigint"]
    key = f"{_q('table_schema')} {text} NOT NULL, {_q('table_name')} {text} NOT NULL"
    return [
        f"CREATE TABLE IF NOT EXISTS {quote_table(COLUMNS)} ({key}, {_q('ordinal')} {big} NOT NULL,"
        f" {_q('column_name')} {text} NOT NULL, {_q('logical_type')} {text} NOT NULL,"
        f" {_q('nullable')} {d.types['boolean']} NOT NULL,"
        f" PRIMARY KEY ({_q('table_schema')}, {_q('table_name')}, {_q('column_name')}))",
        f"CREATE TABLE IF NOT EXISTS {quote_table(ERRORS)} ({key}, {_q('reason')} {text} NOT NULL,"
        f" {_q('since')} {d.types['timestamptz']} NOT NULL,"
        f" PRIMARY KEY ({_q('table_schema')}, {_q('table_name')}))",
    ]


def _where(table: TableId) -> str:
    schema, name = quote_literal(table.schema), quote_literal(table.name)
    return f"{_q('table_schema')} = {schema} AND {_q('table_name')} = {name}"


def read_record(table: TableId) -> str:
    cols = f"{_q('column_name')}, {_q('logical_type')}, {_q('nullable')}"
    return f"SELECT {cols} FROM {quote_table(COLUMNS)} WHERE {_where(table)} ORDER BY {_q('ordinal')}"


def write_record(table: TableId, columns: Sequence[Column]) -> list[str]:
    rows = ", ".join(
        f"({quote_literal(table.schema)}, {quote_literal(table.name)}, {i}, {quote_literal(c.name)},"
        f" {quote_literal(str(c.type))}, {'TRUE' if c.nullable else 'FALSE'})"
        for i, c in enumerate(columns)
    )
    names = ", ".join(_q(n) for n in ("table_schema", "table_name", "ordinal", "column_name", "logical_type"))
    return [
        f"DELETE FROM {quote_table(COLUMNS)} WHERE {_where(table)}",
        f"INSERT INTO {quote_table(COLUMNS)} ({names}, {_q('nullable')}) VALUES {rows}",
    ]


def add_column(d: Dialect, table: TableId, column: Column) -> str:
    """``ADD COLUMN``; with the value the source's existing rows hold (``Column.default``) as its default,
    which gives it to the target's existing rows (merges always name every column, so later rows are not
    affected)."""
    name, ddl = quote_ident(column.name), d.column_type(column.type)
    default = f" DEFAULT CAST({quote_literal(column.default)} AS {ddl})" if column.default is not None else ""
    return f"ALTER TABLE {quote_table(table)} ADD COLUMN {name} {ddl}{default}"


def alter_column(d: Dialect, table: TableId, column: Column) -> str:
    assert d.alter_type is not None
    return d.alter_type.format(
        table=quote_table(table), column=quote_ident(column.name), type=d.column_type(column.type)
    )


def record_error(d: Dialect, table: TableId, reason: str) -> list[str]:
    return [
        clear_error(table),
        f"INSERT INTO {quote_table(ERRORS)} ({_q('table_schema')}, {_q('table_name')}, {_q('reason')},"
        f" {_q('since')}) VALUES ({quote_literal(table.schema)}, {quote_literal(table.name)},"
        f" {quote_literal(reason)}, {d.now})",
    ]


def clear_error(table: TableId) -> str:
    return f"DELETE FROM {quote_table(ERRORS)} WHERE {_where(table)}"


def read_errors() -> str:
    return f"SELECT {_q('table_schema')}, {_q('table_name')}, {_q('reason')} FROM {quote_table(ERRORS)}"


def _q(name: str) -> str:
    return quote_ident(name)


# -- running it ------------------------------------------------------------------------------------------


class _Engine(Protocol):
    dialect: Dialect

    def _execute(self, sql: str) -> None: ...

    def _query(self, sql: str) -> list[tuple[Any, ...]]: ...

    def _in_transaction(self, statements: list[str]) -> None: ...


def recorded(engine: _Engine, table: TableId) -> tuple[Column, ...]:
    rows = engine._query(read_record(table))
    return tuple(Column(n, parse_type(t), bool(nullable)) for n, t, nullable in rows)


def record_if_missing(engine: _Engine, schema: TableSchema) -> list[str]:
    """Statements recording ``schema`` as the target's shape unless a shape is recorded already."""
    return [] if recorded(engine, schema.table) else write_record(schema.table, schema.columns)


def evolve(engine: _Engine, schema: TableSchema, *, keep_dropped: bool = False) -> tuple[str, ...]:
    """Make the target ready for a batch of shape ``schema``; returns the columns upserts set to NULL.

    Raises ``IncompatibleSchemaChange`` (after recording the reason) when the shape cannot be applied.
    """
    d, table = engine.dialect, schema.table
    current = recorded(engine, table)
    if not current:  # never recorded (a table created before evolution existed): take the batch's word
        engine._in_transaction(write_record(table, schema.columns))
        return ()
    plan = diff(current, schema, d)
    if plan.incompatible and _retype_if_empty(engine, schema, current):
        return evolve(engine, schema, keep_dropped=keep_dropped)  # compatible now
    if plan.incompatible:
        reason = f"{table}: " + "; ".join(plan.incompatible) + ". Merging of this table is stopped."
        engine._in_transaction(record_error(d, table, reason))
        raise IncompatibleSchemaChange(reason)
    if plan.changes_ddl or plan.record != current:
        _apply(engine, table, plan)
    return () if keep_dropped else plan.dropped


def _retype_if_empty(engine: _Engine, schema: TableSchema, current: Sequence[Column]) -> bool:
    """An empty target (never loaded, or emptied by a resync after its type was fixed in the schemas) has
    nothing to lose: its incompatible columns are dropped and added again with the batch's type. Not for
    key columns (their constraint would go with them). Returns whether it did."""
    table, by_name = schema.table, {c.name: c for c in current}
    changed = [c for c in schema.columns if c.name in by_name]
    changed = [c for c in changed if compare(by_name[c.name].type, c.type)[0] == "incompatible"]
    if not changed or any(c.name in schema.primary_key for c in changed):
        return False
    if engine._query(f"SELECT 1 FROM {quote_table(table)} LIMIT 1"):
        return False
    statements = []
    for c in changed:
        statements.append(f"ALTER TABLE {quote_table(table)} DROP COLUMN {quote_ident(c.name)}")
        statements.append(add_column(engine.dialect, table, Column(c.name, c.type, nullable=True)))
    retyped = {c.name: c.type for c in changed}
    record = [Column(c.name, retyped[c.name], True) if c.name in retyped else c for c in current]
    engine._in_transaction([*statements, *write_record(table, record), clear_error(table)])
    return True


def _apply(engine: _Engine, table: TableId, plan: Diff) -> None:
    d = engine.dialect
    statements: list[str] = []
    run_alone: Callable[[str], None] = engine._execute
    for _old, new in plan.widen:
        if d.alter_commits:
            run_alone(alter_column(d, table, new))  # commits by itself: never inside the merge transaction
        else:
            statements.append(alter_column(d, table, new))
    statements += [add_column(d, table, c) for c in plan.add]
    statements += write_record(table, plan.record)
    statements.append(clear_error(table))
    engine._in_transaction(statements)


def errors(engine: _Engine) -> dict[TableId, str]:
    """Tables stopped by an incompatible change, with the reason (empty before setup)."""
    exists = engine._query(
        "SELECT 1 FROM information_schema.tables WHERE"
        f" table_schema = {quote_literal(ERRORS.schema)} AND table_name = {quote_literal(ERRORS.name)}"
    )
    if not exists:
        return {}
    return {TableId(s, n): r for s, n, r in engine._query(read_errors())}
