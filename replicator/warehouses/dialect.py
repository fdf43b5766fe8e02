"""SQL builders shared by the SQL warehouses. Pure: every method returns statement text, nothing connects.

A ``Dialect`` is data: a type map and a few capability flags. The builders read the flags; no code asks
which engine it is. Each warehouse module (``duckdb``, ``postgres``, ``redshift``) holds its instance.

The merge works on a *staging* table holding the batch's table columns plus ``_op``, ``_seq`` and
``_unchanged`` (see ``replicator.model``); ``reduce`` keeps the last change per primary key, and the merge
expects one row per key (a target row matching two staging rows is an error in MERGE, and double-applies
in the three-statement form).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from replicator.model import (
    COMMIT_TIME_COLUMN,
    FROM_SEQ_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    SEQ_COLUMN,
    SOFT_DELETED,
    SOFT_DELETED_AT,
    UNCHANGED_COLUMN,
    Column,
    Manifest,
    TableId,
    TableSchema,
)
from replicator.sql import quote_ident, quote_literal, quote_table
from replicator.values import LogicalType
from replicator.warehouses import ledger
from replicator.warehouses.base import STAGING_PREFIX, STATE_SCHEMA
from replicator.warehouses.ledger import LEDGER, LEDGER_COLUMNS, PROGRESS, PROGRESS_COLUMNS

__all__ = [
    "LEDGER",
    "LEDGER_COLUMNS",
    "PROGRESS",
    "PROGRESS_COLUMNS",
    "Dialect",
]
_DELETE = quote_literal("D")


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one SQL engine spells types and the few statements that differ.

    ``types`` maps a LogicalType kind to DDL; ``sized`` overrides it when the type carries a length or a
    precision (``{length}``, ``{precision}``, ``{scale}`` are filled in). ``unconstrained_numeric`` is used
    for ``numeric`` without precision. ``unchanged_test`` is a boolean expression with ``{list}`` (the
    ``_unchanged`` column) and ``{name}`` (a column name literal) or ``{json_item}`` (the literal
    ``,<name as compact JSON>,``, for engines that keep the list as a JSON document).
    """

    name: str
    types: Mapping[str, str]
    sized: Mapping[str, str]
    unconstrained_numeric: str
    text_array: str  # DDL of the staging ``_unchanged`` column
    unchanged_test: str
    staging_create: str  # "CREATE TEMP TABLE" and the like
    staging_suffix: str = ""  # e.g. " ON COMMIT DROP"
    distinct_on: bool = True  # SELECT DISTINCT ON (...) exists; otherwise a row_number() window
    merge_statement: bool = True  # one MERGE; otherwise DELETE + UPDATE + INSERT
    lock_target: str | None = None  # statement taken first in apply, ``{table}`` is the target
    # -- additive flags (Redshift and schema evolution); the defaults keep DuckDB/PostgreSQL unchanged --
    varchar_bytes_per_char: int = 0  # >0: VARCHAR/CHAR lengths are bytes: chars x this, capped below
    varchar_max_bytes: int = 0
    staging_all_metadata: bool = False  # staging holds every staged column in file order (COPY by position)
    target_alias: bool = True  # False: the target is named in full (Redshift's MERGE takes no alias)
    single_when_matched: bool = False  # MERGE allows one unconditional WHEN MATCHED and WHEN NOT MATCHED
    now: str = "CURRENT_TIMESTAMP"  # the transaction's time, for ledger rows and _deleted_at
    alter_type: str | None = "ALTER TABLE {table} ALTER COLUMN {column} TYPE {type}"  # None: cannot
    alter_commits: bool = False  # ALTER ... TYPE commits implicitly: run it outside the merge transaction
    widen_kinds: frozenset[str] = field(default_factory=frozenset)  # kinds alter_type may widen
    # The engine reads the staged Parquet file itself (DuckDB): a batch is merged from a view over the file
    # (``staging_view``) instead of being copied into a staging table first, which cost as much as the MERGE.
    reads_parquet: bool = False
    # ``reduce`` as a join with each key's highest ``_seq`` (DuckDB: 2-3x faster than DISTINCT ON's sort)
    reduce_by_join: bool = False

    # -- types ---------------------------------------------------------------------------------------

    def column_type(self, t: LogicalType) -> str:
        """DDL type of ``t``."""
        if t.kind == "numeric" and t.precision is None:
            return self.unconstrained_numeric
        has_size = t.length is not None or t.precision is not None
        if self.varchar_bytes_per_char and t.kind in ("varchar", "char") and t.length is not None:
            size = min(t.length * self.varchar_bytes_per_char, self.varchar_max_bytes)
            return self.sized[t.kind].format(length=size)
        if has_size and t.kind in self.sized:
            return self.sized[t.kind].format(length=t.length, precision=t.precision, scale=t.scale or 0)
        return self.types[t.kind]

    def _column_defs(self, columns: Sequence[Column], *, constraints: bool) -> list[str]:
        return [
            f"{quote_ident(c.name)} {self.column_type(c.type)}"
            + (" NOT NULL" if constraints and not c.nullable else "")
            for c in columns
        ]

    # -- state schema --------------------------------------------------------------------------------

    def setup(self) -> list[str]:
        """Idempotent statements creating the state schema, the ledger and the progress table."""
        batches = ", ".join(
            [*self._column_defs(LEDGER_COLUMNS, constraints=True), f"PRIMARY KEY ({ledger.BATCH_ID})"]
        )
        progress = ", ".join(
            [*self._column_defs(PROGRESS_COLUMNS, constraints=True), f"PRIMARY KEY ({ledger.TABLE_KEY})"]
        )
        return [
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STATE_SCHEMA)}",
            f"CREATE TABLE IF NOT EXISTS {quote_table(LEDGER)} ({batches})",
            f"CREATE TABLE IF NOT EXISTS {quote_table(PROGRESS)} ({progress})",
        ]

    def list_leftover_staging(self) -> str:
        """Query for (schema, name) of staging tables a previous run left in the state schema.

        ``left()`` rather than LIKE: ``_`` is a LIKE wildcard and escapes differ between engines.
        """
        return (
            "SELECT table_schema, table_name FROM information_schema.tables"
            f" WHERE table_schema = {quote_literal(STATE_SCHEMA)} AND table_type = 'BASE TABLE'"
            f" AND left(table_name, {len(STAGING_PREFIX)}) = {quote_literal(STAGING_PREFIX)}"
        )

    def drop_table(self, table: TableId | str) -> str:
        name = quote_table(table) if isinstance(table, TableId) else quote_ident(table)
        return f"DROP TABLE IF EXISTS {name}"

    def drop_view(self, name: str) -> str:
        return f"DROP VIEW IF EXISTS {quote_ident(name)}"

    # -- target and staging tables -------------------------------------------------------------------

    def create_table(
        self,
        schema: TableSchema,
        *,
        soft_delete: bool = False,
        column_suffix: Mapping[str, str] | None = None,
        table_suffix: str = "",
    ) -> list[str]:
        """Create the target (and its schema) if missing, with the source's primary key.

        ``soft_delete`` adds ``_deleted``/``_deleted_at``; ``column_suffix`` (column -> text after its
        type, e.g. an ENCODE clause) and ``table_suffix`` (e.g. DISTKEY/SORTKEY) carry physical layout.
        """
        extra = column_suffix or {}
        cols = [
            d + (f" {extra[c.name]}" if c.name in extra else "")
            for c, d in zip(schema.columns, self._column_defs(schema.columns, constraints=True), strict=True)
        ]
        if soft_delete:
            cols += [
                f"{_q(SOFT_DELETED)} {self.types['boolean']} NOT NULL DEFAULT FALSE",
                f"{_q(SOFT_DELETED_AT)} {self.types['timestamptz']}",
            ]
        if schema.primary_key:
            cols.append(f"PRIMARY KEY ({_idents(schema.primary_key)})")
        return [
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema.table.schema)}",
            f"CREATE TABLE IF NOT EXISTS {quote_table(schema.table)} ({', '.join(cols)}){table_suffix}",
        ]

    def create_staging(self, schema: TableSchema, name: str, *, moves: bool = False) -> str:
        """Staging table for one batch: the table's columns, all nullable (deletes carry only the key),
        then ``_op``, ``_seq``, ``_unchanged`` (and ``_from_seq`` for a batch with key ``moves``)."""
        cols = ", ".join(f"{quote_ident(c)} {t}" for c, t in self._staging_types(schema, moves=moves))
        return f"{self.staging_create} {quote_ident(name)} ({cols}){self.staging_suffix}"

    def staging_view(self, schema: TableSchema, name: str, path: str, *, moves: bool = False) -> str:
        """For ``reads_parquet`` engines: the staging table's columns and types (the same casts an INSERT
        into it would make) as a view over the staged file ``path``."""
        cols = ", ".join(
            f"CAST({quote_ident(c)} AS {t}) AS {quote_ident(c)}"
            for c, t in self._staging_types(schema, moves=moves)
        )
        return (
            f"CREATE TEMP VIEW {quote_ident(name)} AS SELECT {cols} FROM read_parquet({quote_literal(path)})"
        )

    def _staging_types(self, schema: TableSchema, *, moves: bool) -> list[tuple[str, str]]:
        meta = [
            (OP_COLUMN, self.types["text"]),
            (SEQ_COLUMN, self.types["bigint"]),
            (UNCHANGED_COLUMN, self.text_array),
        ]
        if self.staging_all_metadata:  # the staged file's order: _op, _seq, _pos, _commit_time, _unchanged
            meta[2:2] = [
                (POSITION_COLUMN, self.types["text"]),
                (COMMIT_TIME_COLUMN, self.types["timestamptz"]),
            ]
        if moves:
            meta.append((FROM_SEQ_COLUMN, self.types["bigint"]))
        return [*((c.name, self.column_type(c.type)) for c in schema.columns), *meta]

    def staging_columns(self, schema: TableSchema, *, moves: bool = False) -> tuple[str, ...]:
        """Columns of the staging table in order: what a loader must deliver. ``moves``: the batch has
        key changes whose unsent values come from the old key (its file has ``_from_seq``, last)."""
        extra = (FROM_SEQ_COLUMN,) if moves else ()
        if self.staging_all_metadata:
            return (*schema.column_names, OP_COLUMN, SEQ_COLUMN, POSITION_COLUMN, COMMIT_TIME_COLUMN,
                    UNCHANGED_COLUMN, *extra)  # fmt: skip
        return (*schema.column_names, OP_COLUMN, SEQ_COLUMN, UNCHANGED_COLUMN, *extra)

    def copy_from_stdin(self, schema: TableSchema, name: str, *, moves: bool = False) -> str:
        """COPY of headerless CSV (unquoted empty field = NULL) into the staging table."""
        cols = _idents(self.staging_columns(schema, moves=moves))
        return f"COPY {quote_ident(name)} ({cols}) FROM STDIN WITH (FORMAT csv)"

    def insert_from_parquet(self, schema: TableSchema, name: str, path: str, *, moves: bool = False) -> str:
        cols = _idents(self.staging_columns(schema, moves=moves))
        return (
            f"INSERT INTO {quote_ident(name)} ({cols}) SELECT {cols} FROM read_parquet({quote_literal(path)})"
        )

    def fill_moved(self, schema: TableSchema, staging: str, unchanged: Sequence[str]) -> str:
        """For the rows of a batch whose unsent (``_unchanged``) columns live under another key (a primary-key
        change: ``_from_seq`` names the staged row holding that key), take them from the target's row under
        it. Runs on the loaded staging table before anything changes the target, so it reads the row as it
        was before the batch, which is the row the source moved."""
        sets = [f"{quote_ident(c)} = {self._new_value(c, keep=True, t='t', s='s')}" for c in unchanged] + [
            f"{quote_ident(UNCHANGED_COLUMN)} = NULL"
        ]
        on = " AND ".join(f"t.{quote_ident(k)} = o.{quote_ident(k)}" for k in schema.primary_key)
        return (
            f"UPDATE {quote_ident(staging)} AS s SET {', '.join(sets)}"
            f" FROM {quote_ident(staging)} AS o, {quote_table(schema.table)} AS t"
            f" WHERE o.{quote_ident(SEQ_COLUMN)} = s.{quote_ident(FROM_SEQ_COLUMN)} AND {on}"
        )

    # -- merge ---------------------------------------------------------------------------------------

    def reduce(self, schema: TableSchema, staging: str, reduced: str, *, moves: bool = False) -> str:
        """Copy the last change (highest ``_seq``) per primary key of ``staging`` into ``reduced``."""
        keys = _idents(schema.primary_key)
        seq = quote_ident(SEQ_COLUMN)
        head = f"{self.staging_create} {quote_ident(reduced)}{self.staging_suffix} AS SELECT"
        if self.reduce_by_join:
            last = f"max({seq})"  # the key's last change: its highest position in the batch
            on = " AND ".join(f"s.{quote_ident(k)} = m.{quote_ident(k)}" for k in schema.primary_key)
            return (
                f"{head} s.* FROM {quote_ident(staging)} AS s JOIN (SELECT {keys}, {last} AS {seq}"
                f" FROM {quote_ident(staging)} GROUP BY {keys}) AS m ON {on} AND s.{seq} = m.{seq}"
            )
        if self.distinct_on:
            return f"{head} DISTINCT ON ({keys}) * FROM {quote_ident(staging)} ORDER BY {keys}, {seq} DESC"
        cols = _idents(self.staging_columns(schema, moves=moves))
        rn = quote_ident("_replicator_rn")
        return (
            f"{head} {cols} FROM (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY {seq} DESC)"
            f" AS {rn} FROM {quote_ident(staging)}) AS s WHERE {rn} = 1"
        )

    def count_ops(self, source: str) -> str:
        """(keys, deletes) of a reduced staging table."""
        op = quote_ident(OP_COLUMN)
        return (
            f"SELECT count(*), sum(CASE WHEN {op} = {_DELETE} THEN 1 ELSE 0 END) FROM {quote_ident(source)}"
        )

    def merge(
        self,
        schema: TableSchema,
        source: str,
        *,
        unchanged: Sequence[str] = (),
        soft_delete: bool = False,
        nulls: Sequence[str] = (),
        old_images: str | None = None,
    ) -> list[str]:
        """Apply a one-row-per-key staging table: delete keys whose change is D, upsert the others.

        ``unchanged`` names the columns some row of the batch did not send; for those the update keeps
        the target's value where the row's ``_unchanged`` lists the column. Keeping the CASE off the other
        columns keeps the common batch (no unchanged TOAST) a plain column copy. ``soft_delete``: a D sets
        ``_deleted``/``_deleted_at`` instead of removing the row, and an upsert clears them. ``nulls``:
        target columns the batch lacks (dropped at the source) that an update sets to NULL.
        ``old_images`` (engines with data-modifying CTEs and ``RETURNING``, see ``_merge_capturing``): also
        copy the old image of every target row the merge changes into that (empty) table.
        """
        if not schema.primary_key:
            raise ValueError(f"{schema.table}: a table needs a primary key to be merged")
        target = quote_table(schema.table)
        t = "t" if self.target_alias else target
        aliased = f"{target} AS t" if self.target_alias else target

        def parts(name: str) -> tuple[str, str, str, str, str, str]:
            s = "s" if self.target_alias else quote_ident(name)
            src = f"{quote_ident(name)} AS s" if self.target_alias else quote_ident(name)
            on = " AND ".join(f"{t}.{quote_ident(k)} = {s}.{quote_ident(k)}" for k in schema.primary_key)
            sets = [
                f"{quote_ident(c)} = {self._new_value(c, keep=c in unchanged, t=t, s=s)}"
                for c in schema.column_names
                if c not in schema.primary_key
            ]
            sets += [f"{quote_ident(c)} = NULL" for c in nulls]
            values = [f"{s}.{quote_ident(c)}" for c in schema.column_names]
            if soft_delete:
                sets += [f"{_q(SOFT_DELETED)} = FALSE", f"{_q(SOFT_DELETED_AT)} = NULL"]
                values += ["FALSE", "NULL"]
            return s, src, on, f"{s}.{quote_ident(OP_COLUMN)}", ", ".join(sets), ", ".join(values)

        cols = _idents([*schema.column_names, *((SOFT_DELETED, SOFT_DELETED_AT) if soft_delete else ())])
        mark = f"{_q(SOFT_DELETED)} = TRUE, {_q(SOFT_DELETED_AT)} = {self.now}"
        _, src, on, op, sets, values = parts(source)
        if soft_delete:
            remove = f"UPDATE {aliased} SET {mark} FROM {src} WHERE {on} AND {op} = {_DELETE}"
        else:
            remove = f"DELETE FROM {aliased} USING {src} WHERE {on} AND {op} = {_DELETE}"
        if old_images is not None:
            return [
                self._merge_capturing(
                    schema, old_images, src=src, on=on, sets=sets, values=values, cols=cols, mark=mark,
                    soft_delete=soft_delete,
                )
            ]  # fmt: skip
        if self.merge_statement and self.single_when_matched:
            # Redshift: one unconditional WHEN MATCHED and WHEN NOT MATCHED, a table (not a query) as the
            # source. So deletes go first, and the upserts are copied into a table of their own.
            upserts = source + "_u"
            _, usrc, uon, _, usets, uvalues = parts(upserts)
            if not usets:  # key-only table: an update that changes nothing keeps the one-clause form
                k = quote_ident(schema.primary_key[0])
                usets = f"{k} = {usrc}.{k}"
            return [
                remove,
                f"{self.staging_create} {quote_ident(upserts)}{self.staging_suffix} AS SELECT * FROM"
                f" {quote_ident(source)} WHERE {quote_ident(OP_COLUMN)} <> {_DELETE}",
                f"MERGE INTO {target} USING {usrc} ON {uon} WHEN MATCHED THEN UPDATE SET {usets}"
                f" WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({uvalues})",
                self.drop_table(upserts),
            ]
        if self.merge_statement:
            first = f"UPDATE SET {mark}" if soft_delete else "DELETE"
            clauses = [f"WHEN MATCHED AND {op} = {_DELETE} THEN {first}"]
            if sets:  # a table of key columns only has nothing to update
                clauses.append(f"WHEN MATCHED THEN UPDATE SET {sets}")
            clauses.append(f"WHEN NOT MATCHED AND {op} <> {_DELETE} THEN INSERT ({cols}) VALUES ({values})")
            return [f"MERGE INTO {aliased} USING {src} ON {on} " + " ".join(clauses)]
        statements = [remove]
        if sets:
            statements.append(f"UPDATE {aliased} SET {sets} FROM {src} WHERE {on} AND {op} <> {_DELETE}")
        statements.append(
            f"INSERT INTO {target} ({cols}) SELECT {values} FROM {src} WHERE {op} <> {_DELETE}"
            f" AND NOT EXISTS (SELECT 1 FROM {aliased} WHERE {on})"
        )
        return statements

    def _merge_capturing(
        self,
        schema: TableSchema,
        old_images: str,
        *,
        src: str,
        on: str,
        sets: str,
        values: str,
        cols: str,
        mark: str,
        soft_delete: bool,
    ) -> str:
        """The merge as one statement of data-modifying CTEs (PostgreSQL) that also inserts the old image
        (``SELECT *`` of the target) of every row it deletes, marks or updates into ``old_images``, so
        incremental views get them without locating the touched rows a second time: an update joins the
        target again as ``o`` right beside the row it changes (the page is in memory for that probe), a
        delete returns the row it removes. Same effect as the MERGE form: D deletes (or marks) existing
        keys, other changes update existing keys and insert the rest (keys the update did not return).
        """
        if not self.target_alias:
            raise ValueError(f"{self.name}: capturing old images needs the aliased merge form")
        target = quote_table(schema.table)
        o_on = " AND ".join(f"o.{quote_ident(k)} = s.{quote_ident(k)}" for k in schema.primary_key)
        u_on = " AND ".join(f"u.{quote_ident(k)} = s.{quote_ident(k)}" for k in schema.primary_key)
        op = f"s.{quote_ident(OP_COLUMN)}"
        joined = f"FROM {src} JOIN {target} AS o ON {o_on} WHERE {on}"
        if soft_delete:
            removed = f"UPDATE {target} AS t SET {mark} {joined} AND {op} = {_DELETE} RETURNING o.*"
        else:
            removed = f"DELETE FROM {target} AS t USING {src} WHERE {on} AND {op} = {_DELETE} RETURNING t.*"
        if sets:
            updated = f"UPDATE {target} AS t SET {sets} {joined} AND {op} <> {_DELETE} RETURNING o.*"
        else:  # key columns only: nothing to update, but the matched rows' images are still old images
            updated = f"SELECT o.* FROM {src} JOIN {target} AS o ON {o_on} WHERE {op} <> {_DELETE}"
        inserted = (
            f"INSERT INTO {target} ({cols}) SELECT {values} FROM {src} WHERE {op} <> {_DELETE}"
            f" AND NOT EXISTS (SELECT 1 FROM u WHERE {u_on})"
        )
        return (
            f"WITH r AS ({removed}), u AS ({updated}), i AS ({inserted})"
            f" INSERT INTO {quote_ident(old_images)} SELECT * FROM r UNION ALL SELECT * FROM u"
        )

    def create_old_images(self, table: TableId, name: str) -> str:
        """An empty temp table shaped like the target, for ``merge(old_images=...)``."""
        head = f"{self.staging_create} {quote_ident(name)}{self.staging_suffix}"
        return f"{head} AS SELECT * FROM {quote_table(table)} LIMIT 0"

    def _new_value(self, column: str, *, keep: bool, t: str = "t", s: str = "s") -> str:
        new = f"{s}.{quote_ident(column)}"
        if not keep:
            return new
        item = "," + json.dumps(column, ensure_ascii=False, separators=(",", ":")) + ","
        test = self.unchanged_test.format(
            list=f"{s}.{quote_ident(UNCHANGED_COLUMN)}",
            name=quote_literal(column),
            json_item=quote_literal(item),
        )
        return f"CASE WHEN {test} THEN {t}.{quote_ident(column)} ELSE {new} END"

    # -- ledger --------------------------------------------------------------------------------------

    def ledger_lookup(self, batch_id: str) -> str:
        return ledger.lookup(batch_id)

    def ledger_record(self, m: Manifest) -> list[str]:
        """See ``replicator.warehouses.ledger.record``."""
        return ledger.record(m, now=self.now)

    def progress_exists(self) -> str:
        return ledger.progress_exists()

    def table_states(self) -> str:
        return ledger.progress_rows()


def _idents(names: Sequence[str]) -> str:
    return ", ".join(quote_ident(n) for n in names)


def _q(name: str) -> str:
    return quote_ident(name)
