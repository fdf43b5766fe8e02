"""The warehouse suite's tools: staged Parquet batches written the way ``replicator.stage`` writes them
(``Stager``), the warehouses under test (``Target``: DuckDB, PostgreSQL, and Redshift's code path through
``tests/helpers/redshift_shim.py``), and whole-table reads normalised across drivers (``rows``, ``ledger``).
The fixtures that hand these out (``target``, ``wh``, ``stager``, ``redshift_shim``) are in tests/conftest.py.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replicator.model import (
    COMMIT_TIME_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    SEQ_COLUMN,
    UNCHANGED_COLUMN,
    Column,
    Manifest,
    Position,
    TableId,
    TableSchema,
    batch_id,
)
from replicator.sql import quote_ident, quote_table
from replicator.warehouses import (
    ApplyResult,
    DuckDBWarehouse,
    MergeContext,
    PostgresWarehouse,
    RedshiftWarehouse,
    SqlWarehouse,
)
from tests.helpers.redshift_shim import RedshiftShim, open_stand_in

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

ACCOUNTS = TableSchema(
    TableId("app", "accounts"),
    (
        Column.of("id", "bigint", nullable=False),
        Column.of("name", "text"),
        Column.of("balance", "numeric(12,2)"),
        Column.of("note", "text"),
    ),
    ("id",),
)


# -- staging helpers -------------------------------------------------------------------------------------


@dataclass
class Stager:
    """Writes staged batches; positions keep increasing across batches like a real source's."""

    folder: Path
    next_position: int = 1

    def batch(
        self,
        schema: TableSchema,
        changes: Sequence[tuple[str, dict[str, Any]]],
        *,
        unchanged: dict[int, list[str]] | None = None,
    ) -> tuple[Manifest, Path]:
        """``changes``: (op, values) in source order; ``unchanged``: change index -> columns not sent."""
        n = len(changes)
        positions = [f"{self.next_position + i:012d}" for i in range(n)]
        self.next_position += n
        commit_times = [T0 + timedelta(seconds=int(p)) for p in positions]
        unchanged = unchanged or {}
        arrays = [
            pa.array([values.get(c.name) for _, values in changes], type=c.type.arrow) for c in schema.columns
        ]
        arrays += [
            pa.array([op for op, _ in changes], pa.string()),
            pa.array(range(n), pa.int64()),
            pa.array(positions, pa.string()),
            pa.array(commit_times, pa.timestamp("us", tz="UTC")),
            pa.array([unchanged.get(i) for i in range(n)], pa.list_(pa.string())),
        ]
        names = [
            *schema.column_names,
            OP_COLUMN,
            SEQ_COLUMN,
            POSITION_COLUMN,
            COMMIT_TIME_COLUMN,
            UNCHANGED_COLUMN,
        ]
        first, last = Position(positions[0]), Position(positions[-1])
        bid = batch_id(schema.table, first, last)
        path = self.folder / f"{bid}.parquet"
        pq.write_table(pa.table(arrays, names=names), path)
        ops = [op for op, _ in changes]
        manifest = Manifest(
            table=schema.table,
            batch_id=bid,
            first=first,
            last=last,
            rows=n,
            inserts=ops.count("I"),
            updates=ops.count("U"),
            deletes=ops.count("D"),
            bytes=path.stat().st_size,
            data_key=path.name,
            columns=tuple((c.name, str(c.type)) for c in schema.columns),
            primary_key=schema.primary_key,
            min_commit_time=commit_times[0],
            max_commit_time=commit_times[-1],
            staged_at=datetime.now(UTC),
        )
        return manifest, path


def put(
    wh: SqlWarehouse,
    stager: Stager,
    schema: TableSchema,
    changes: Sequence[tuple[str, dict[str, Any]]],
    *,
    unchanged: dict[int, list[str]] | None = None,
) -> ApplyResult:
    manifest, path = stager.batch(schema, changes, unchanged=unchanged)
    return wh.apply(manifest, schema, path)


def rows(wh: SqlWarehouse, schema: TableSchema) -> list[tuple[Any, ...]]:
    """The whole target table ordered by key, values normalised across drivers."""
    # JSON as text: drivers differ (psycopg2 parses jsonb, DuckDB returns text); compare parsed documents.
    cols = ", ".join(
        f"CAST({quote_ident(c.name)} AS VARCHAR)" if c.type.kind == "json" else quote_ident(c.name)
        for c in schema.columns
    )
    keys = ", ".join(quote_ident(c) for c in schema.primary_key)
    result = query(wh, f"SELECT {cols} FROM {quote_table(schema.table)} ORDER BY {keys}")
    return [tuple(_normal(c, v) for c, v in zip(schema.columns, row, strict=True)) for row in result]


def _normal(column: Column, v: Any) -> Any:
    kind = column.type.kind
    if v is None:
        return None
    if kind == "json":
        return json.loads(v)
    if kind == "uuid":
        return str(v)
    if kind == "bytea":  # redshift_connector hands PostgreSQL's bytea over as its \\x text
        return bytes.fromhex(v[2:]) if isinstance(v, str) else bytes(v)
    if kind == "numeric" and isinstance(v, str):  # Redshift keeps a numeric without precision as text
        return Decimal(v)
    if kind == "real":
        return struct.unpack("f", struct.pack("f", v))[0]  # compare at float4 precision, exactly
    return v


def query(wh: SqlWarehouse, sql: str) -> list[tuple[Any, ...]]:
    assert isinstance(wh, DuckDBWarehouse | PostgresWarehouse | RedshiftWarehouse)
    return wh.query(sql)


def ledger(wh: SqlWarehouse) -> list[tuple[Any, ...]]:
    return query(
        wh,
        'SELECT batch_id, table_schema, table_name, first_position, last_position, "rows", inserts, updates,'
        " deletes, min_commit_time, max_commit_time FROM _replicator.batches ORDER BY first_position",
    )


# -- the warehouses under test ---------------------------------------------------------------------------


@dataclass
class Target:
    kind: str
    address: str
    shim: RedshiftShim | None = None
    old_images: bool = False  # PostgreSQL with an ``OldImageCheck`` hook on every merge

    def open(self) -> SqlWarehouse:
        if self.kind == "duckdb":
            return DuckDBWarehouse(self.address)
        if self.kind == "redshift":
            assert self.shim is not None
            return open_stand_in(self.shim, self.address)
        return PostgresWarehouse(self.address)


def acct(i: int, name: str, balance: str | None = "0.00", note: str | None = None) -> dict[str, Any]:
    return {"id": i, "name": name, "balance": None if balance is None else Decimal(balance), "note": note}


def row(i: int, name: str, balance: str | None = "0.00", note: str | None = None) -> tuple[Any, ...]:
    return (i, name, None if balance is None else Decimal(balance), note)


def target_rows(
    wh: object, columns: list[str], table: TableId = TableId("dbo", "accounts")
) -> list[tuple[object, ...]]:
    """``columns`` of every row of ``table`` (the schema-change tests' ``dbo.accounts``), by the first."""
    cols = ", ".join(quote_ident(c) for c in columns)
    rows: list[tuple[object, ...]] = wh.fetch(f"SELECT {cols} FROM {quote_table(table)} ORDER BY 1")  # type: ignore[attr-defined]
    return [tuple(r) for r in rows]


class OldImageCheck:
    """Asks for old images; fails the batch unless the copy equals the touched keys' rows before the merge."""

    def __init__(self) -> None:
        self.expected: list[tuple[Any, ...]] = []
        self.checked = 0  # batches whose copy was compared

    def wants_old_images(self, ctx: MergeContext) -> bool:
        return True

    def before_merge(self, ctx: MergeContext) -> None:
        assert ctx.old_images is not None, "the warehouse did not copy old images although asked"
        on = " AND ".join(f"s.{quote_ident(k)} = t.{quote_ident(k)}" for k in ctx.schema.primary_key)
        staged = quote_ident(ctx.staging)
        self.expected = sorted(
            ctx.query(
                f"SELECT t.* FROM {quote_table(ctx.schema.table)} AS t"
                f" WHERE EXISTS (SELECT 1 FROM {staged} AS s WHERE {on})"
            ),
            key=repr,
        )

    def after_merge(self, ctx: MergeContext) -> None:
        assert ctx.old_images is not None
        copied = sorted(ctx.query(f"SELECT * FROM {quote_ident(ctx.old_images)}"), key=repr)
        assert copied == self.expected, "the merge's copy of old images differs from the rows it changed"
        self.checked += 1


KINDS = ["duckdb", "postgres", "redshift"]
# A conformance test that merges through ``wh`` and also runs on PostgreSQL's merge form that copies old
# images aside (used when an incremental view reads the table), checked by ``OldImageCheck``.
also_with_old_images = pytest.mark.parametrize("target", [*KINDS, "postgres-old-images"], indirect=True)


def row_counter(warehouse: DuckDBWarehouse, table: str) -> Callable[[], int]:
    """How many rows ``table`` (quoted SQL name) of a DuckDB warehouse holds, 0 before it exists, read
    through a connection of its own (so a test's thread can count while the pipeline's threads merge)."""
    cursor = warehouse.cursor()

    def count() -> int:
        try:
            row = cursor.execute(f"SELECT count(*) FROM {table}").fetchone()
        except Exception:  # not created yet
            return 0
        return int(row[0]) if row else 0

    return count
