"""Shared by the PostgreSQL source memory benchmarks (tests/benchmarks/test_bench_pg_large_*.py)."""

# The replicator, as app.build would assemble it: PostgreSQL source, local staging, a DuckDB target, or a
# PostgreSQL one with ``REPLICATOR_BENCH_TARGET_DSN`` (then DuckDB is not imported, as the daemon does not
# for a PostgreSQL target: 13 MB of RSS).
CHILD = """
import json, os, resource, sys, threading, time
from pathlib import Path
from replicator.schema.catalog import load_tables
from replicator.config import BatchConfig, PipelineConfig
from replicator.pipeline import Pipeline
from replicator.storage.quarantine import Quarantine
from replicator.sources.postgres.pgoutput import parse_lsn
from replicator.sources.postgres.source import PostgresSource
from replicator.stage import Stager
from replicator.storage.store import LocalStore

dsn, tmp, slot, target = sys.argv[1], Path(sys.argv[2]), sys.argv[3], parse_lsn(sys.argv[4])
schemas = load_tables(tmp / "schemas")
staging = LocalStore(tmp / "staging")
source = PostgresSource(dsn, schemas, state=staging, slot=slot, publication="pub")
TARGET_DSN = os.environ.get("REPLICATOR_BENCH_TARGET_DSN")
if TARGET_DSN:
    from replicator.warehouses.postgres import PostgresWarehouse
    warehouse = PostgresWarehouse(TARGET_DSN)
else:
    from replicator.warehouses.duckdb import DuckDBWarehouse
    warehouse = DuckDBWarehouse(str(tmp / "wh.duckdb"))
pipeline = Pipeline(source=source, stager=Stager(staging, Quarantine(staging)), warehouse=warehouse,
                    schemas=schemas, batch=BatchConfig(max_rows=100_000, max_age_seconds=1.0),
                    settings=PipelineConfig(poll_interval_seconds=0.05))
started = time.monotonic()
pipeline.run(threading.Event(), once=True)  # the first run also creates the slot and copies the table
while source.stream.flush_lsn < target:
    pipeline.run(threading.Event(), once=True)
    assert time.monotonic() - started < 1200, "did not catch up"
seconds = time.monotonic() - started
assert not pipeline.errors, {str(t): e[:500] for t, e in pipeline.errors.items()}  # no result if it failed
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
source.close()
warehouse.close()
count = ids = 0
if target and TARGET_DSN:  # the first run only sets up
    import psycopg2
    conn = psycopg2.connect(TARGET_DSN)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT id) FROM public.big")
        count, ids = cur.fetchone()
    conn.close()
elif target:
    import duckdb
    con = duckdb.connect(str(tmp / "wh.duckdb"), read_only=True)
    count, ids = con.execute("SELECT count(*), count(DISTINCT id) FROM public.big").fetchone()
print(json.dumps({"rss_mb": rss_mb, "rows": count, "distinct": ids, "seconds": seconds}))
"""
