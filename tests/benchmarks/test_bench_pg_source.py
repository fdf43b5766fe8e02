"""PostgreSQL source speed: 1,000,000 changes (500k inserts + 500k updates in 10k-row transactions) read by
``pg_recvlogical`` (pgoutput) to /dev/null and by the replicator from capture to staged Parquet, in the same
run, from two slots created before the load so both read exactly the same WAL. Prints both rates, the ratio
and the peak RSS of this process. ``REPLICATOR_BENCH_ROWS`` scales it down for a quick look;
``REPLICATOR_BENCH_REPLICATOR_FIRST=1`` runs the replicator before pg_recvlogical (order affects caches)."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from pathlib import Path

import pytest

from replicator.buffer import Buffer
from replicator.model import Batch, ChangeChunk, Column, TableId, TableSchema
from replicator.sources.postgres import PostgresSource, lsn_text, parse_lsn
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from tests.helpers.pg import execute

pytestmark = pytest.mark.benchmark

ROWS = int(os.environ.get("REPLICATOR_BENCH_ROWS", "500000"))  # inserted, then each updated once
TXN = 10_000
T = TableSchema(
    TableId("public", "bench"),
    (
        Column.of("id", "bigint", nullable=False),
        Column.of("a", "integer"),
        Column.of("b", "text"),
        Column.of("c", "timestamptz"),
        Column.of("d", "numeric"),
    ),
    ("id",),
)


def test_capture_to_staged_rate_against_pg_recvlogical(pg_dsn: str, tmp_path: Path) -> None:
    execute(
        pg_dsn,
        "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric)",
        "CREATE TABLE bench_end (x int)",
        "CREATE PUBLICATION pub FOR TABLE bench, bench_end",
        "SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')",
    )
    staging = LocalStore(tmp_path / "staging")
    source = PostgresSource(pg_dsn, {T.table: T}, state=staging, slot="bench_repl", publication="pub")
    list(source.read())  # creates the slot and copies the (empty) table
    for lo in range(1, ROWS + 1, TXN):
        execute(
            pg_dsn,
            f"INSERT INTO bench SELECT g, g, 'value ' || g, now(), g / 7.0 "
            f"FROM generate_series({lo}, {lo + TXN - 1}) g",
        )
    for lo in range(1, ROWS + 1, TXN):
        execute(pg_dsn, f"UPDATE bench SET a = a + 1, d = d * 2 WHERE id BETWEEN {lo} AND {lo + TXN - 1}")
    [(end,)] = execute(pg_dsn, "SELECT pg_current_wal_lsn()::text")
    end_lsn = parse_lsn(str(end))
    # One more published change past the end, in a table the replicator does not replicate: pg_recvlogical
    # stops at the first record past --endpos, and the replicator confirms past it, without waiting for a
    # keepalive.
    execute(pg_dsn, "INSERT INTO bench_end VALUES (1)")
    total = 2 * ROWS

    try:
        recv_seconds, repl_seconds, staging_seconds, captured = _measure(pg_dsn, source, staging, end_lsn)
    finally:
        source.close()
        execute(
            pg_dsn,
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name IN ('bench_recv', 'bench_repl')",
        )
    assert captured == total
    recv_rate, repl_rate = total / recv_seconds, total / repl_seconds
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\n{total:,} changes: pg_recvlogical {recv_rate:,.0f} rows/s ({recv_seconds:.1f} s); "
        f"replicator capture-to-staged {repl_rate:,.0f} rows/s ({repl_seconds:.1f} s, of which staging "
        f"{staging_seconds:.1f} s); "
        f"ratio {repl_rate / recv_rate:.2f}; peak RSS {rss_mb:.0f} MB"
    )


def _measure(
    pg_dsn: str, source: PostgresSource, staging: LocalStore, end_lsn: int
) -> tuple[float, float, float, int]:
    if os.environ.get("REPLICATOR_BENCH_REPLICATOR_FIRST"):  # the other order, to see what order costs
        repl_seconds, staging_seconds, captured = _replicate(source, staging, end_lsn)
        return _recv(pg_dsn, end_lsn), repl_seconds, staging_seconds, captured
    recv_seconds = _recv(pg_dsn, end_lsn)
    return recv_seconds, *_replicate(source, staging, end_lsn)


def _recv(pg_dsn: str, end_lsn: int) -> float:
    parts = dict(p.split("=", 1) for p in pg_dsn.split())
    started = time.perf_counter()
    subprocess.run(
        [
            "pg_recvlogical", "-h", parts.get("host", "127.0.0.1"), "-p", parts.get("port", "5432"),
            "-U", parts.get("user", "postgres"), "-d", parts["dbname"], "--slot", "bench_recv", "--start",
            "-o", "proto_version=1", "-o", "publication_names=pub", "-f", "/dev/null",
            "-E", lsn_text(end_lsn), "--no-loop",
        ],
        check=True,
        timeout=600,
    )  # fmt: skip
    return time.perf_counter() - started


def _replicate(source: PostgresSource, staging: LocalStore, end_lsn: int) -> tuple[float, float, int]:
    stager = Stager(staging, Quarantine(staging))
    buffer = Buffer({T.table: T}, max_rows=100_000, max_bytes=64 << 20, max_age_seconds=5.0)
    captured = 0
    staging_seconds = 0.0

    def stage(batch: Batch) -> None:
        nonlocal staging_seconds
        t = time.perf_counter()
        stager.stage(batch)
        source.ack({batch.table: batch.last})
        staging_seconds += time.perf_counter() - t

    started = time.perf_counter()
    while source.stream.flush_lsn < end_lsn:
        for change in source.read():
            if isinstance(change, ChangeChunk):
                captured += len(change)
                batches = buffer.add_chunk(change)
            else:
                captured += 1
                batches = buffer.add(change)  # type: ignore[arg-type]
            for batch in batches:
                stage(batch)
        for batch in buffer.drain():
            stage(batch)
        assert time.perf_counter() - started < 900
    repl_seconds = time.perf_counter() - started
    return repl_seconds, staging_seconds, captured
