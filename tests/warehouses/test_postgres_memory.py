"""PostgreSQL as a target loads a batch of large values in slices of bounded bytes (issue 13, point 8).

A staged batch of 64 rows of 1 MB was read back as one slice (100k rows at most) with pyarrow reading ahead,
then rendered as CSV and handed to COPY whole: the load added ~200 MB to the process for a 64 MB batch,
beside the reading and staging that run at the same time. The load runs in a child process here, so its
RSS can be sampled alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from replicator.model import Batch, Change, Column, Op, Position, TableId, TableSchema
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.warehouses.postgres import slice_rows
from tests.helpers.pg import fetch

BIG = TableSchema(
    TableId("app", "big"), (Column.of("id", "bigint", nullable=False), Column.of("body", "text")), ("id",)
)
MB = 1 << 20
ROWS = 64

# Applies every staged batch of a folder, oldest first; prints per batch the most RSS it added (sampled
# every millisecond), in MB.
CHILD = """
import json, os, sys, threading, time
from pathlib import Path
from replicator.model import Column, TableId, TableSchema
from replicator.stage import decode_manifest
from replicator.warehouses import PostgresWarehouse

schema = TableSchema(
    TableId("app", "big"), (Column.of("id", "bigint", nullable=False), Column.of("body", "text")), ("id",)
)
page = os.sysconf("SC_PAGE_SIZE")
peak = [0]

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page

def sample():
    while True:
        peak[0] = max(peak[0], rss())
        time.sleep(0.001)

wh = PostgresWarehouse(sys.argv[1])
wh.setup()
wh.ensure_table(schema)
threading.Thread(target=sample, daemon=True).start()
rises = []
root = Path(sys.argv[2])
for path in sorted(root.glob("batches/*/*.json")):
    manifest = decode_manifest(path.read_bytes())
    time.sleep(0.02)
    before = peak[0] = rss()
    assert wh.apply(manifest, schema, root / manifest.data_key).applied
    time.sleep(0.02)
    rises.append((peak[0] - before) / 2**20)
wh.close()
print(json.dumps(rises))
"""


def test_a_batch_of_1_mb_values_loads_in_slices_of_a_few_mb(pg_dsn: str, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    stager = Stager(store, Quarantine(store))
    staged = []
    for k, (op, fill) in enumerate(((Op.INSERT, "a"), (Op.UPDATE, "b"))):
        # Random hex: compresses about as much as real text of this size (not to nothing, like repeats).
        changes = [
            Change(BIG.table, op, (str(i), fill + os.urandom(MB // 2).hex()), Position(f"{k}{i:08d}"))
            for i in range(ROWS)
        ]
        staged.append(stager.stage(Batch(BIG.table, BIG, changes)))
    rows = slice_rows(pq.ParquetFile(tmp_path / staged[0].data_key).metadata)
    assert 1 <= rows <= 16, rows  # about 8 MB of 1 MB values, not the 100,000-row default
    run = subprocess.run(
        [sys.executable, "-c", CHILD, pg_dsn, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rises = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(rises) == 2
    # Measured: 28-44 MB per 64 MB batch in slices (~200 MB as one slice with read-ahead).
    assert max(rises) < 100, rises
    [(count, total)] = fetch(pg_dsn, "SELECT count(*), sum(length(body)) FROM app.big WHERE body LIKE 'b%'")
    assert (count, total) == (ROWS, ROWS * (MB + 1))
