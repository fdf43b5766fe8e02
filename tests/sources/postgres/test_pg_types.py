"""PostgreSQL source types end to end: interval, arrays, enums, json/jsonb, uuid, numeric (NaN, 35 digits),
bytea and timestamptz stream from a real PostgreSQL through staging into DuckDB and PostgreSQL targets, and
arrive with the same values (text forms where the schema maps a type to text; see postgres.py)."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg2
import pytest

from replicator.config import BatchConfig, PipelineConfig
from replicator.pipeline import Pipeline
from replicator.schema import load_tables
from replicator.sources.postgres.source import PostgresSource
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.warehouses import DuckDBWarehouse, PostgresWarehouse, Warehouse
from tests.helpers.pg import Databases, current_lsn, execute

TOML = """schema = "public"
name = "types"
primary_key = ["id"]
[columns]
id = "integer not null"
iv = "text"
ia = "text"
ta = "text"
m = "text"
j = "json"
jb = "json"
u = "uuid"
n = "numeric"
b = "bytea"
tz = "timestamptz"
"""
DDL = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE types (id int PRIMARY KEY, iv interval, ia int[], ta text[], m mood, j json, jb jsonb, u uuid,
                    n numeric, b bytea, tz timestamptz);
"""
ROWS = """
INSERT INTO types VALUES
 (1, '1 year 2 mons 3 days 04:05:06.789', '{1,2,NULL}', '{"a b","c,d",NULL,"q\\"t"}', 'happy',
  '{"k": [1, 2.50, "x"]}', '{"b": 1, "a": null}', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'NaN',
  '\\x00ff41'::bytea, '2024-02-29 23:59:59.123456+05'),
 (2, '-00:00:01', '{}', '{}', 'sad', '[]', '"s"', NULL, 12345678901234567890.123456789012345, '\\x'::bytea,
  '1999-12-31 23:00:00+00'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE types SET n = '-0.000001', iv = '1 day' WHERE id = 3;
"""
# Every column as text, the way the source renders it; the targets are read back the same way below.
SOURCE_TEXT = (
    "SELECT id, iv::text, ia::text, ta::text, m::text, j::text, jb::text, u::text, n::text, "
    "encode(b, 'hex'), tz FROM types ORDER BY id"
)


@pytest.fixture
def second_db(pg_databases: Databases) -> str:
    return pg_databases.new()


def _pipeline(
    dsn: str, tmp: Path, slot: str, warehouse: Warehouse, numeric_as: str
) -> tuple[PostgresSource, Pipeline]:
    folder = tmp / f"schemas_{slot}" / "tables"
    folder.mkdir(parents=True)
    (folder / "types.toml").write_text(TOML.replace('n = "numeric"', f'n = "{numeric_as}"'))
    schemas = load_tables(folder)
    staging = LocalStore(tmp / f"staging_{slot}")
    source = PostgresSource(dsn, schemas, state=staging, slot=slot, publication="pub")
    pipeline = Pipeline(
        source=source,
        stager=Stager(staging, Quarantine(staging)),
        warehouse=warehouse,
        schemas=schemas,
        batch=BatchConfig(max_rows=1000, max_age_seconds=0.2),
        settings=PipelineConfig(poll_interval_seconds=0.05),
    )
    return source, pipeline


def _catch_up(dsn: str, source: PostgresSource, pipeline: Pipeline) -> None:
    target, deadline = current_lsn(dsn), time.monotonic() + 120
    pipeline.run(threading.Event(), once=True)
    while source.stream.flush_lsn < target:
        assert time.monotonic() < deadline, "the source did not catch up within 120 s"
        pipeline.run(threading.Event(), once=True)


def _norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
    *head, tz = row
    return (*head, tz.astimezone(UTC) if isinstance(tz, datetime) else tz)


def test_every_type_streams_into_duckdb_and_postgresql_with_the_source_values(
    pg_dsn: str, second_db: str, tmp_path: Path
) -> None:
    execute(pg_dsn, DDL)
    tag = uuid.uuid4().hex[:8]
    duck = DuckDBWarehouse(str(tmp_path / "wh.duckdb"))
    pg_target = PostgresWarehouse(second_db)
    # Unbounded numeric: PostgreSQL's NUMERIC holds NaN and any precision; DuckDB's DECIMAL(38,10) holds
    # neither, so its faithful form there is text (documented in replicator/sources/postgres/source.py).
    rigs = [
        _pipeline(pg_dsn, tmp_path, f"d_{tag}", duck, numeric_as="text"),
        _pipeline(pg_dsn, tmp_path, f"p_{tag}", pg_target, numeric_as="numeric"),
    ]
    try:
        for source, pipeline in rigs:
            _catch_up(pg_dsn, source, pipeline)  # slots and (empty) snapshots first: all rows then stream
        execute(pg_dsn, ROWS)
        for source, pipeline in rigs:
            _catch_up(pg_dsn, source, pipeline)
    finally:
        for source, _ in rigs:
            source.close()
        duck.close()
        pg_target.close()
        execute(pg_dsn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        f"WHERE slot_name LIKE '%{tag}'")  # fmt: skip
    conn = psycopg2.connect(pg_dsn)
    with conn.cursor() as cur:
        cur.execute(SOURCE_TEXT)
        expected = [_norm(r) for r in cur.fetchall()]
    conn.close()
    assert expected[0][8] == "NaN" and expected[1][8] == "12345678901234567890.123456789012345"

    conn = psycopg2.connect(second_db)
    with conn.cursor() as cur:
        cur.execute(SOURCE_TEXT.replace("FROM types", "FROM public.types"))
        in_postgres = [_norm(r) for r in cur.fetchall()]
    conn.close()
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    in_duckdb = [
        _norm(r)
        for r in con.execute(
            "SELECT id, iv, ia, ta, m, CAST(j AS VARCHAR), CAST(jb AS VARCHAR), CAST(u AS VARCHAR), "
            "n, lower(hex(b)), tz FROM public.types ORDER BY id"
        ).fetchall()
    ]
    con.close()
    assert in_postgres == expected
    assert in_duckdb == expected
