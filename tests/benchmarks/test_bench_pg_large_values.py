"""PostgreSQL source memory with large values: rows holding 300 kB-1 MB texts stream through a real slot
(source -> staged -> a PostgreSQL or a DuckDB target) with the replicator's peak RSS under 400 MB (issue 13,
point 8), whatever the sizes: byte limits must count what each value costs. Three passes over the rows
(``load``): inserts, updates that rewrite the whole row (both taking the columnar row path), then updates
where one change in 64 carries a new large value beside an unchanged TOASTed column while the other 63 are
tiny (the ``Change`` path: a byte count sampled on one change in 64 never saw the large ones). The
replicator runs in a child process, as in ``test_bench_pg_large_txn``, so its own peak RSS is measured.
``REPLICATOR_BENCH_LARGE_VALUES_ROWS`` scales it (default 300 rows: about 200 MB of values per pass).

Into PostgreSQL, default settings (2026-12, 2 shared cores; peak RSS of the replicator, which starts near
80 MB): 827-904 MB before glibc's mmap threshold was fixed (``replicator/__init__.py``), 603-770 MB after;
now 331-344 MB in 40-45 s (as fast as before). What took it there, each measured alone on 64 MB batches of
1 MB values: the target's load read a batch back as one slice with pyarrow reading ahead, then rendered it
as CSV whole (~200 MB added while it loaded; now slices of ~8 MB, 28-44 MB); the staged Parquet file was
built in memory before it was stored (now written into the store's file: staging a batch of chunks adds 20
MB, not 47); reading the slot was bounded by message count only (512 reads of 1 MB values) and queued 64 MB
ahead (~80 MB queued at the peak; now runs of 4 MB and a 16 MB queue); and two staging costs the batch
count missed (``replicator/buffer.py``): a batch mixing chunks with changes to resolve is staged row by
row, copying its chunks' values twice more (~230 MB of Arrow memory at once for a 64 MB batch), and an
update leaving a TOASTed value unsent after an update of its row that carried it is filled with that value,
staging it twice (~190 MB of Arrow text); both now count. What remains at the peak: the batch being staged
(its values, their Arrow text and the writer's 8 MB row groups: one call adds at most ~150 MB), the merge
of the previous batch on the merge thread (up to ~115 MB, its slices and the driver's COPY buffers), the
read-ahead queue and the run being decoded, and the process itself (~90 MB with its connections).

Into DuckDB, the code before the large-value merge (``warehouses/duckdb.py``, ``_LargeMerge``): 0.97-1.41 GB
at 64 MB batches (``duckdb-64mb``), 0.80-0.87 GB at 16 MB (DuckDB's default ``batch.max_bytes`` since).
DuckDB's MERGE updates the large column in place (new and old values held, then the checkpoint rewrites the
row group's column whole: DuckDB works on vectors of 2,048 rows and compresses long text per vector with
ZSTD), and the vacuum at each checkpoint rewrites the row groups holding deleted rows, merged up to 122,880
rows: the whole table.
With the large-value merge (deletes by key, small rows updated in place per set of unsent columns, large
rows deleted and appended again in 16 MB slices, unsent values read by exact key lookups, no vacuum in the
commits of those rounds until the file doubles): 635-666 MB in 13-21 s at 64 MB batches (the code before,
same minutes: 965-1173 MB in 28-29 s); 334-371 MB in 16-22 s at 16 MB batches (800 MB in 57 s), under the
bound: DuckDB's default batch size is 16 MB since (``config.BATCH_BYTES_DEFAULTS``; small rows merge as
fast). At 64 MB it is not met: DuckDB's transaction holds a batch's appended values (64 MB) until the
commit, which copies them into the table and its WAL (+40-130 MB), beside the staging of the next batch.
Also tried at 64 MB, with the large-value merge: memory_limit 128 MB and ZSTD off
(``disabled_compression_methods``) 494-553 MB (a 64 MB limit: out of memory; the file 1.9x larger);
threads=1, 4 MB slices, allocator flush thresholds of 16 MB: within the noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pytest

from replicator.config import BATCH_BYTES_DEFAULTS
from tests.helpers.bench import CHILD
from tests.helpers.pg import Databases, execute, fetch

pytestmark = pytest.mark.benchmark

ROWS = int(os.environ.get("REPLICATOR_BENCH_LARGE_VALUES_ROWS", "300"))
TXN = 25  # rows per transaction
LIMIT_MB = 400

# Run before the child: samples the replicator's RSS every 10 ms and, at exit, prints (stderr, one JSON line
# tagged "phases") per phase its peak RSS and the most RSS one call of it added: staging a batch, merging
# one, and the rest (reading the slot and buffering). WAREHOUSE is replaced by the target's class.
PHASES = """
import atexit, json, os, sys, threading, time
from replicator.stage import Stager
from replicator.warehouses import WAREHOUSE

_phase, _peak, _rise = ["read"], {}, {}

def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def _sample():
    while True:
        r, p = _rss(), _phase[0]
        _peak[p] = max(_peak.get(p, 0.0), r)
        time.sleep(0.01)

def _tagged(name, f):
    def call(*a, **k):
        before, _phase[0] = _rss(), name
        try:
            return f(*a, **k)
        finally:
            _phase[0] = "read"
            _rise[name] = max(_rise.get(name, 0.0), _peak.get(name, 0.0) - before)
    return call

Stager.stage = _tagged("stage", Stager.stage)
WAREHOUSE.apply_round = _tagged("merge", WAREHOUSE.apply_round)
threading.Thread(target=_sample, daemon=True).start()
atexit.register(lambda: print("phases", json.dumps({"peak": _peak, "rise": _rise}), file=sys.stderr))
"""

TABLE_TOML = """schema = "public"
name = "big"
primary_key = ["id"]
[columns]
id = "bigint not null"
n = "integer"
body = "text"
note = "text"
"""

# 9,375 to 31,249 md5 digests of 32 characters: 300 kB to 1 MB per value, spread over the rows. ``note``
# (8 kB, stored out of line) makes an update that leaves it alone take the ``Change`` path.
BODY = (
    "(SELECT string_agg(md5(g::text || '.' || s::text || '{salt}'), '') "
    "FROM generate_series(1, 9375 + (g * 7919) % 21875) s)"
)
NOTE = "(SELECT string_agg(md5(g::text || ':' || s::text), '') FROM generate_series(1, 256) s)"


def load(dsn: str, rows: int) -> None:
    """The three passes of the module docstring (rows >= 127)."""
    for lo in range(1, rows + 1, TXN):
        ids = f"generate_series({lo}, {min(lo + TXN - 1, rows)}) g"
        execute(dsn, f"INSERT INTO big SELECT g, 0, {BODY.format(salt='a')}, {NOTE} FROM {ids}")
    rewrite = "n = n + 1, body = 'b' || substr(body, 2), note = 'b' || substr(note, 2)"
    for lo in range(1, rows + 1, TXN):
        execute(dsn, f"UPDATE big SET {rewrite} WHERE id BETWEEN {lo} AND {lo + TXN - 1}")
    for x in range(1, rows + 1):
        small = 1 if x > 63 else 64  # 63 other rows, by n only: body and note are sent as unchanged
        tiny = f"UPDATE big SET n = n + 1 WHERE id BETWEEN {small} AND {small + 62}"
        execute(dsn, f"BEGIN; {tiny}; UPDATE big SET body = 'c' || substr(body, 2) WHERE id = {x}; COMMIT")


@pytest.mark.parametrize("target", ["postgres", "duckdb", "duckdb-64mb"])
def test_large_values_stream_with_peak_rss_under_400_mb(
    pg_dsn: str, pg_databases: Databases, tmp_path: Path, target: str
) -> None:
    target_dsn = pg_databases.new() if target == "postgres" else ""
    # Each warehouse's default batch size (config.BATCH_BYTES_DEFAULTS), as the daemon's config gives it;
    # ``duckdb-64mb``: DuckDB with 64 MB batches, printed for comparison, not bound (see above).
    size = BATCH_BYTES_DEFAULTS["duckdb" if target == "duckdb" else "postgres"]
    child = CHILD.replace("max_age_seconds=1.0)", f"max_age_seconds=1.0, max_bytes={size})")
    assert child != CHILD
    phases = PHASES.replace("WAREHOUSE", "PostgresWarehouse" if target == "postgres" else "DuckDBWarehouse")
    env = {**os.environ, "REPLICATOR_BENCH_TARGET_DSN": target_dsn}
    (tmp_path / "schemas" / "tables").mkdir(parents=True)
    (tmp_path / "schemas" / "tables" / "big.toml").write_text(TABLE_TOML)
    slot = f"big_{uuid.uuid4().hex[:8]}"
    execute(
        pg_dsn,
        "CREATE TABLE big (id bigint PRIMARY KEY, n int, body text, note text)",
        "ALTER TABLE big ALTER COLUMN note SET STORAGE EXTERNAL",  # out of line, uncompressed
        "CREATE PUBLICATION pub FOR TABLE big",
    )
    # A first run creates the slot and copies the (empty) table before the load: the second only streams.
    first = subprocess.run(
        [sys.executable, "-c", child, pg_dsn, str(tmp_path), slot, "0/0"],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    try:
        load(pg_dsn, ROWS)
        [(end, mb)] = execute(pg_dsn, "SELECT pg_current_wal_lsn()::text, sum(length(body)) / 1e6 FROM big")
        run = subprocess.run(
            [sys.executable, "-c", phases + child, pg_dsn, str(tmp_path), slot, str(end)],
            capture_output=True, text=True, timeout=1500, check=False, env=env,
        )  # fmt: skip
    finally:
        execute(pg_dsn, f"SELECT pg_drop_replication_slot('{slot}')")
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    [phases] = [json.loads(line[7:]) for line in run.stderr.splitlines() if line.startswith("phases ")]
    peak, rise = phases["peak"], phases["rise"]
    shown = f"reading {peak.get('read', 0):.0f} MB, " + ", ".join(
        f"{name} {peak.get(key, 0):.0f} MB (one call added at most {rise.get(key, 0):.0f})"
        for name, key in (("staging", "stage"), ("merging", "merge"))
    )
    print(
        f"\n{ROWS} rows of 300 kB-1 MB ({float(mb):.0f} MB of values per pass, 3 passes) into {target}: "
        f"replicated in "
        f"{result['seconds']:.1f} s, replicator peak RSS {result['rss_mb']:.0f} MB (bound {LIMIT_MB} MB);"
        f" peak RSS while {shown}"
    )
    assert (result["rows"], result["distinct"]) == (ROWS, ROWS)
    digest = "SELECT md5(string_agg(n || ':' || md5(body) || md5(note), ',' ORDER BY id)) FROM {}"
    [(expected,)] = fetch(pg_dsn, digest.format("big"))
    if target == "postgres":
        [(replicated,)] = fetch(target_dsn, digest.format("public.big"))
    else:
        replicated = _duckdb_digest(tmp_path, digest.format("public.big"))
    assert replicated == expected
    if target != "duckdb-64mb":
        assert result["rss_mb"] < LIMIT_MB


def _duckdb_digest(tmp_path: Path, sql: str) -> str:
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        [(digest,)] = con.execute(sql).fetchall()
    finally:
        con.close()
    return str(digest)
