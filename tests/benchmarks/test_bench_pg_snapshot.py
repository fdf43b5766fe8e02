"""PostgreSQL initial copy speed: four tables of the issue's shape ``(id bigint primary key, a int, b text,
c timestamptz, d numeric)``, ``REPLICATOR_BENCH_ROWS`` rows in all (default 1,000,000), copied under the
slot's snapshot and staged as Parquet, with one copy worker and with two. For scale, the same tables
read by ``psql \\copy ... TO /dev/null`` one after the other (the server's and the wire's part alone).
Prints rows/s per run and the peak RSS of this process."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from pathlib import Path

import pytest

from replicator.buffer import Buffer
from replicator.model import Batch, ChangeChunk, Column, Op, TableId, TableSchema
from replicator.sources.postgres import PostgresSource
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from tests.helpers.pg import execute

pytestmark = pytest.mark.benchmark

ROWS = int(os.environ.get("REPLICATOR_BENCH_ROWS", "1000000"))
TABLES = 4
CHUNK = int(os.environ.get("REPLICATOR_BENCH_COPY_CHUNK_BYTES", str(4 << 20)))  # CSV bytes per chunk


def _schema(n: int) -> TableSchema:
    return TableSchema(
        TableId("public", f"snap{n}"),
        (
            Column.of("id", "bigint", nullable=False),
            Column.of("a", "integer"),
            Column.of("b", "text"),
            Column.of("c", "timestamptz"),
            Column.of("d", "numeric"),
        ),
        ("id",),
    )


SCHEMAS = {s.table: s for s in map(_schema, range(TABLES))}


def _copy_to_null(dsn: str) -> float:
    parts = dict(p.split("=", 1) for p in dsn.split())
    started = time.perf_counter()
    for table in SCHEMAS:
        subprocess.run(
            ["psql", "-h", parts.get("host", "127.0.0.1"), "-p", parts.get("port", "5432"),
             "-U", parts.get("user", "postgres"), "-d", parts["dbname"], "-q", "-c",
             f"\\copy (SELECT * FROM {table.name}) TO '/dev/null'"],
            check=True,
            timeout=600,
        )  # fmt: skip
    return time.perf_counter() - started


def _snapshot(dsn: str, tmp: Path, workers: int) -> tuple[float, int]:
    staging = LocalStore(tmp / f"staging{workers}")
    stager = Stager(staging, Quarantine(staging))
    buffer = Buffer(SCHEMAS, max_rows=100_000, max_bytes=64 << 20, max_age_seconds=5.0)
    slot = f"bench_snap_{workers}"
    started = time.perf_counter()
    source = PostgresSource(dsn, SCHEMAS, state=staging, slot=slot, publication="pub", copy_workers=workers)
    source.copy_chunk_bytes = CHUNK
    captured = 0

    def stage(batch: Batch) -> None:
        stager.stage(batch)
        source.ack({batch.table: batch.last})

    try:
        for change in source._prepare():
            if isinstance(change, ChangeChunk):
                captured += len(change)
                batches = buffer.add_chunk(change)
            else:
                captured += change.op is not Op.TRUNCATE
                batches = buffer.add(change)
            for batch in batches:
                stage(batch)
        for batch in buffer.drain():
            stage(batch)
        assert source._snapshot_pending is None  # every table's copy staged and acknowledged
        seconds = time.perf_counter() - started
    finally:
        source.close()
        execute(dsn, f"SELECT pg_drop_replication_slot('{slot}')")
    return seconds, captured


def test_initial_copy_rate_with_one_and_two_workers(pg_dsn: str, tmp_path: Path) -> None:
    per_table = ROWS // TABLES
    for table in SCHEMAS:
        execute(
            pg_dsn,
            f"CREATE TABLE {table.name} (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric)",
            f"INSERT INTO {table.name} SELECT g, g, 'value ' || g, now(), g / 7.0"
            f" FROM generate_series(1, {per_table}) g",
            f"VACUUM ANALYZE {table.name}",
        )
    execute(pg_dsn, f"CREATE PUBLICATION pub FOR TABLE {', '.join(t.name for t in SCHEMAS)}")
    raw = _copy_to_null(pg_dsn)
    rows = per_table * TABLES
    lines = [f"\n{TABLES} tables, {rows:,} rows: psql \\copy to /dev/null {rows / raw:,.0f} rows/s"]
    for workers in (1, 2):
        seconds, captured = _snapshot(pg_dsn, tmp_path, workers)
        assert captured == per_table * TABLES
        lines.append(
            f"copy workers {workers}: copy-to-staged {captured / seconds:,.0f} rows/s ({seconds:.1f} s,"
            f" ratio to \\copy {raw / seconds:.2f})"
        )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("; ".join(lines) + f"; peak RSS {rss_mb:.0f} MB")
