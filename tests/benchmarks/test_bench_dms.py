"""DMS source throughput: rows/s from DMS CSV files on S3 to staged Parquet, and a 1 GB backlog's peak RSS.

Not timed tests: run them with ``scripts/bench.sh`` (``-m benchmark``). Sizes: BENCH_DMS_ROWS (rows through
S3, default 1,000,000) and BENCH_DMS_GB (size of the local CSV backlog, default 1.0).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replicator.buffer import Buffer
from replicator.model import Change, ChangeChunk, Column, TableId, TableSchema
from replicator.sources.dms import DmsOptions, DmsSource
from replicator.stage import Stager
from replicator.storage import LocalStore, ObjectStore, Quarantine, S3Settings, S3Store

pytestmark = pytest.mark.benchmark

TABLE = TableId("bench", "payments")
SCHEMA = TableSchema(
    TABLE,
    (
        Column.of("payment_id", "bigint", nullable=False),
        Column.of("patient_id", "bigint"),
        Column.of("amount", "numeric(12,2)"),
        Column.of("method", "varchar(20)"),
        Column.of("posted_at", "timestamp"),
        Column.of("note", "text"),
    ),
    ("payment_id",),
)
ROWS = int(os.environ.get("BENCH_DMS_ROWS", "1000000"))
GB = float(os.environ.get("BENCH_DMS_GB", "1.0"))
FILE_ROWS = 250_000


def _line(i: int) -> str:
    return (
        f"I,2026-11-01 10:00:00.000000,{i},{i % 5000},{i % 997}.25,card,2026-11-01 10:00:00,note {i % 13}\n"
    )


def write_feed(store: ObjectStore, rows: int, tmp: Path) -> int:
    """CDC files of FILE_ROWS rows each; returns bytes written."""
    total = 0
    for f, start in enumerate(range(0, rows, FILE_ROWS)):
        path = tmp / "part.csv"
        with path.open("w") as out:
            for i in range(start, min(rows, start + FILE_ROWS)):
                out.write(_line(i))
        total += path.stat().st_size
        store.put_file(f"bench/payments/20261101-{f:010d}.csv", path)
    return total


def consume(store: ObjectStore, staging: LocalStore) -> tuple[int, float]:
    """Read every file, stage batches of 100k rows, acknowledge; returns (rows, seconds)."""
    quarantine = Quarantine(staging)
    source = DmsSource(
        store, {TABLE: SCHEMA}, state=staging, quarantine=quarantine,
        options=DmsOptions(timestamp_column_name="ts"),
    )  # fmt: skip
    stager = Stager(staging, quarantine)
    buffer = Buffer({TABLE: SCHEMA}, max_rows=100_000, max_bytes=64 << 20, max_age_seconds=1e9)
    n = 0
    t0 = time.perf_counter()
    for change in source.read():
        if isinstance(change, ChangeChunk):
            n += len(change)
            batches = buffer.add_chunk(change)
        else:
            assert isinstance(change, Change)
            n += 1
            batches = buffer.add(change)
        for batch in batches:
            stager.stage(batch)
            source.ack({TABLE: batch.last})
            for m in list(stager.pending(TABLE)):
                stager.remove(m)  # keep the disk bounded: the merge is not what is measured here
    for batch in buffer.drain():
        stager.stage(batch)
        source.ack({TABLE: batch.last})
    return n, time.perf_counter() - t0


def test_bench_dms_csv_on_s3_to_staged_parquet(
    tmp_path: Path, s3_settings: S3Settings, s3_bucket: str
) -> None:
    store = S3Store(s3_bucket, "dms", s3_settings)
    size = write_feed(store, ROWS, tmp_path)
    n, seconds = consume(store, LocalStore(tmp_path / "staging"))
    assert n == ROWS
    print(f"\nDMS CSV on S3 -> staged Parquet: {n:,} rows ({size / 1e6:.0f} MB) in {seconds:.1f} s = "
          f"{n / seconds:,.0f} rows/s")  # fmt: skip


def test_bench_dms_1gb_backlog_is_consumed_with_bounded_memory(tmp_path: Path) -> None:
    rows_per_gb = int(1e9 / len(_line(5_000_000)))
    rows = int(rows_per_gb * GB)
    size = write_feed(LocalStore(tmp_path / "dms"), rows, tmp_path)
    # A child process, so its peak RSS is the consumer's alone (not the generator's or pytest's).
    code = (
        "import resource, sys; from pathlib import Path; from replicator.storage.store import LocalStore; "
        "from tests.benchmarks.test_bench_dms import consume; "
        f"n, s = consume(LocalStore(Path({str(tmp_path / 'dms')!r})), "
        f"LocalStore(Path({str(tmp_path / 'st')!r}))); "
        "print(n, s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    n, seconds, rss_kb = out.stdout.split()[-3:]
    assert int(n) == rows
    print(f"\n{size / 1e9:.2f} GB DMS CSV backlog ({int(n):,} rows): {float(seconds):.1f} s, "
          f"{int(n) / float(seconds):,.0f} rows/s, peak RSS {int(rss_kb) / 1024:.0f} MB")  # fmt: skip
    assert int(rss_kb) < 1024 * 1024, "peak RSS above 1 GB: memory is not bounded"
