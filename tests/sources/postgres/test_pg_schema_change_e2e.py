"""A column added at the PostgreSQL source mid-stream lands in every target without a restart (issue 5).

The same running pipeline (no restart, no resync) reads a real slot; ``ALTER TABLE ... ADD COLUMN`` at the
source makes pgoutput send a new Relation message, which the source turns into a ``SchemaChange`` before
the first row that carries the column. Targets: DuckDB, PostgreSQL and the Redshift code path (the
conformance suite's ``target`` fixture).
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import Column, TableId, TableSchema
from replicator.pipeline import Pipeline
from replicator.sources.postgres.source import PostgresSource
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.values import parse_type
from replicator.warehouses import SqlWarehouse
from tests.helpers.pg import Databases, Templates, catch_up, execute
from tests.helpers.warehouse import Target, target_rows

T = TableId("dbo", "accounts")  # the name target_rows reads
SCHEMA = TableSchema(
    T, (Column("id", parse_type("bigint"), False), Column("name", parse_type("text"))), ("id",)
)
SOURCE_SQL = (
    "CREATE SCHEMA dbo",
    "CREATE TABLE dbo.accounts (id bigint PRIMARY KEY, name text)",
    "INSERT INTO dbo.accounts VALUES (1, 'ann'), (2, 'bob')",
)


@pytest.fixture
def source_dsn(pg_databases: Databases, pg_templates: Templates) -> str:
    """A database of its own (the PostgreSQL targets use ``pg_dsn``), dropped with its slots."""
    return pg_databases.new(prefix="s", template=pg_templates.get(*SOURCE_SQL))


def _replicate(
    target: Target, source_dsn: str, tmp_path: Path
) -> tuple[PostgresSource, SqlWarehouse, Pipeline]:
    """A source of ``dbo.accounts`` (its own slot and publication), ``target`` opened, and their pipeline."""
    staging = LocalStore(tmp_path / "staging")
    slot = f"sc_{uuid.uuid4().hex[:10]}"
    source = PostgresSource(source_dsn, {T: SCHEMA}, state=staging, slot=slot, publication=slot)
    wh = target.open()
    pipeline = Pipeline(
        source=source,
        stager=Stager(staging, Quarantine(staging)),
        warehouse=wh,
        schemas={T: SCHEMA},
        batch=BatchConfig(max_rows=1000, max_age_seconds=0.1),
        settings=PipelineConfig(poll_interval_seconds=0.05),
    )
    return source, wh, pipeline


def test_a_column_added_at_the_postgres_source_mid_stream_lands_in_the_target_without_a_restart(
    target: Target,
    source_dsn: str,
    tmp_path: Path,
) -> None:
    source, wh, pipeline = _replicate(target, source_dsn, tmp_path)
    try:
        execute(source_dsn, "UPDATE dbo.accounts SET name = 'bobby' WHERE id = 2")
        catch_up(pipeline, source, source_dsn)
        assert target_rows(wh, ["id", "name"]) == [(1, "ann"), (2, "bobby")]

        execute(
            source_dsn,
            "INSERT INTO dbo.accounts VALUES (3, 'cy')",
            "ALTER TABLE dbo.accounts ADD COLUMN email varchar(80), ADD COLUMN score numeric(6,2)",
            "INSERT INTO dbo.accounts VALUES (4, 'dee', 'dee@example.com', 12.5)",
            "UPDATE dbo.accounts SET email = 'ann@example.com' WHERE id = 1",
        )
        catch_up(pipeline, source, source_dsn)  # the same pipeline: no restart, no resync
        assert not pipeline.errors
        assert target_rows(wh, ["id", "name", "email", "score"]) == [
            (1, "ann", "ann@example.com", None),
            (2, "bobby", None, None),
            (3, "cy", None, None),
            (4, "dee", "dee@example.com", Decimal("12.50")),
        ]
    finally:
        source.close()
        wh.close()


def test_columns_added_with_a_default_give_it_to_the_existing_rows_in_the_target(
    target: Target,
    source_dsn: str,
    tmp_path: Path,
) -> None:
    """``ADD COLUMN ... DEFAULT`` of a constant rewrites nothing at the source and sends no row, yet every
    existing row has the value there: found from outside, they were NULL in the target. A type whose text
    not every target reads back (``bytea``) stays NULL, with a warning naming the resync."""
    source, wh, pipeline = _replicate(target, source_dsn, tmp_path)
    try:
        catch_up(pipeline, source, source_dsn)
        execute(
            source_dsn,
            "ALTER TABLE dbo.accounts ADD COLUMN active boolean NOT NULL DEFAULT true,"
            " ADD COLUMN tier text DEFAULT 'basic, \"plus\"', ADD COLUMN credit numeric(8,2) DEFAULT 10.5,"
            " ADD COLUMN visits integer DEFAULT 0, ADD COLUMN since date DEFAULT '2024-02-29',"
            " ADD COLUMN blob bytea DEFAULT '\\x01'",
            "INSERT INTO dbo.accounts VALUES (3, 'cy', false, 'gold', 1, 7, '2025-01-01', NULL)",
            "UPDATE dbo.accounts SET visits = 1 WHERE id = 1",
        )
        catch_up(pipeline, source, source_dsn)
        assert not pipeline.errors
        got = target_rows(wh, ["id", "active", "tier", "credit", "visits", "since"])
        assert got == [
            (1, True, 'basic, "plus"', Decimal("10.50"), 1, date(2024, 2, 29)),  # updated since: all sent
            (2, True, 'basic, "plus"', Decimal("10.50"), 0, date(2024, 2, 29)),  # untouched: the default
            (3, False, "gold", Decimal("1.00"), 7, date(2025, 1, 1)),
        ]
        blobs = dict(target_rows(wh, ["id", "blob"]))
        assert blobs[1] is not None and blobs[2] is None and blobs[3] is None  # untouched bytea: NULL
    finally:
        source.close()
        wh.close()
