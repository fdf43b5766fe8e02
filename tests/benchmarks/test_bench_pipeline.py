"""1,000,000 changes (500k inserts, then 500k updates of the same keys) through stage and merge.

Prints rows/s for each step and warehouse. Not a timed test: run it with ``scripts/bench.sh``.
Sizes can be changed with BENCH_ROWS (total changes) and BENCH_BATCH (rows per batch).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator.buffer import Buffer
from replicator.model import Batch, Change, Column, Manifest, Op, Position, TableId, TableSchema
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.values import parse_type
from replicator.warehouses import Warehouse

pytestmark = pytest.mark.benchmark

TABLE = TableId("bench", "payments")
SCHEMA = TableSchema(
    TABLE,
    (
        Column("payment_id", parse_type("bigint"), False),
        Column("patient_id", parse_type("bigint")),
        Column("amount", parse_type("numeric(12,2)")),
        Column("method", parse_type("varchar(20)")),
        Column("posted_at", parse_type("timestamp")),
        Column("note", parse_type("text")),
    ),
    ("payment_id",),
)
TOTAL = int(os.environ.get("BENCH_ROWS", "1000000"))
BATCH = int(os.environ.get("BENCH_BATCH", "100000"))


def changes() -> Iterator[Change]:
    half = TOTAL // 2
    for i in range(half):
        yield Change(
            TABLE,
            Op.INSERT,
            (str(i), str(i % 5000), f"{i % 997}.25", "card", "2026-11-01 10:00:00", "first"),
            Position(f"{i:012d}"),
        )
    for i in range(half):
        yield Change(
            TABLE,
            Op.UPDATE,
            (str(i), str(i % 5000), f"{i % 991}.50", "ach", "2026-11-02 11:30:00", "updated"),
            Position(f"{half + i:012d}"),
        )


def stage_all(tmp_path: Path) -> tuple[Stager, list[Manifest], float, float]:
    store = LocalStore(tmp_path / "staging")
    stager = Stager(store, Quarantine(store))
    buffer = Buffer({TABLE: SCHEMA}, max_rows=BATCH, max_bytes=1 << 40, max_age_seconds=1e9)
    t0 = time.perf_counter()
    batches: list[Batch] = []
    for c in changes():
        batches.extend(buffer.add(c))
    batches.extend(buffer.drain())
    t1 = time.perf_counter()
    manifests = [stager.stage(b) for b in batches]
    t2 = time.perf_counter()
    return stager, manifests, t1 - t0, t2 - t1


def merge_all(stager: Stager, manifests: list[Manifest], wh: Warehouse) -> float:
    wh.setup()
    wh.ensure_table(SCHEMA)
    t0 = time.perf_counter()
    for m in manifests:
        assert wh.apply(m, SCHEMA, Path(stager.store.uri(m.data_key))).applied
    return time.perf_counter() - t0


def report(step: str, seconds: float) -> None:
    print(f"\n  {step:<34} {TOTAL:>9,} rows  {seconds:7.2f} s  {TOTAL / seconds:>10,.0f} rows/s")


def test_stage_and_merge_one_million_changes(tmp_path: Path, pg_dsn: str) -> None:
    from replicator.warehouses import DuckDBWarehouse, PostgresWarehouse

    stager, manifests, buffered, staged = stage_all(tmp_path)
    print(f"\n{TOTAL:,} changes ({TOTAL // 2:,} inserts then {TOTAL // 2:,} updates), batches of {BATCH:,}")
    report("buffer (Change objects -> batches)", buffered)
    report("stage (text -> Arrow -> Parquet)", staged)

    duck = DuckDBWarehouse(str(tmp_path / "bench.duckdb"))
    try:
        report("merge into DuckDB", merge_all(stager, manifests, duck))
        assert duck.table_states()[TABLE].rows == TOTAL
    finally:
        duck.close()

    pg = PostgresWarehouse(pg_dsn)
    try:
        report("merge into PostgreSQL", merge_all(stager, manifests, pg))
        assert pg.table_states()[TABLE].rows == TOTAL
    finally:
        pg.close()
