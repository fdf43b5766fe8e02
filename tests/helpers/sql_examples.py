"""The tables and manifest the golden SQL tests build statements for (test_sql_builders, test_redshift_sql):
a quoted table name with a one-column key, and a table with a two-column key."""

from __future__ import annotations

from datetime import UTC, datetime

from replicator.model import Column, Manifest, Position, TableId, TableSchema


def orders(*extra: Column) -> TableSchema:
    """``sales.'order "lines"'``: id (the key), name and amount, then ``extra``."""
    return TableSchema(
        TableId("sales", 'order "lines"'),
        (
            Column.of("id", "bigint", nullable=False),
            Column.of("name", "varchar(80)"),
            Column.of("amount", "numeric(12,2)"),
            *extra,
        ),
        ("id",),
    )


LINKS = TableSchema(
    TableId("app", "links"),
    (Column.of("a", "integer", nullable=False), Column.of("b", "text", nullable=False)),
    ("a", "b"),
)


def manifest(table: TableId, *, data_key: str) -> Manifest:
    """A batch of 9 rows (5 inserts, 3 updates, 1 delete) of ``table`` staged at ``data_key``."""
    return Manifest(
        table=table,
        batch_id="0123456789abcdef0123456789abcdef",
        first=Position("0000000001"),
        last=Position("0000000009"),
        rows=9,
        inserts=5,
        updates=3,
        deletes=1,
        bytes=1000,
        data_key=data_key,
        columns=(),
        primary_key=("id",),
        min_commit_time=datetime(2024, 1, 1, tzinfo=UTC),
        max_commit_time=None,
        staged_at=datetime(2024, 1, 1, tzinfo=UTC),
    )
