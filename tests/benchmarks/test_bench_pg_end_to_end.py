"""PostgreSQL source end to end from a backlog (issue 16): inserts then updates of every row in 10k-row
transactions, then ``replicator run --once`` (default settings, DuckDB target) timed from process start to
exit, with the target checked equal to the source; ``pg_recvlogical`` (pgoutput, to /dev/null) reads the
same WAL from its own slot in the same run. Prints both rates and the ratio.

``REPLICATOR_BENCH_ROWS`` (default 250,000: 500k changes; issue 16 measures 500,000),
``REPLICATOR_BENCH_E2E_EXTRA`` (TOML appended to the config), ``REPLICATOR_BENCH_CODE`` (another checkout's
folder to run instead of this one, for before/after figures in the same minute: the replicator then runs in
that folder, since ``python -m`` puts the working directory before ``PYTHONPATH``),
``REPLICATOR_BENCH_NEIGHBOUR=1`` (a CPU-bound process runs beside both readers, as on a shared host).
``REPLICATOR_PURE_PYTHON=1`` measures the pure-Python row scanner. The package's bytecode is compiled first,
as ``pip install`` does for the image (``PYTHONDONTWRITEBYTECODE=1`` here would make the run compile it).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pytest

from replicator.sources.postgres import lsn_text, parse_lsn
from tests.helpers.pg import dsn_params, execute

pytestmark = pytest.mark.benchmark

ROWS = int(os.environ.get("REPLICATOR_BENCH_ROWS", "250000"))
TXN = 10_000
EXTRA = os.environ.get("REPLICATOR_BENCH_E2E_EXTRA", "")
CODE = os.environ.get("REPLICATOR_BENCH_CODE", "")
TABLE_TOML = (
    'schema = "public"\nname = "bench"\nprimary_key = ["id"]\n[columns]\nid = "bigint not null"\n'
    'a = "integer"\nb = "text"\nc = "timestamptz"\nd = "numeric(20,6)"\n'
)


def _children_cpu() -> float:
    """CPU seconds (user and system, all threads) of the child processes waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _recv(params: dict[str, str], slot: str, end_lsn: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["pg_recvlogical", "-h", params["host"], "-p", str(params["port"]), "-U", params["user"],
         "-d", params["dbname"], "--slot", slot, "--start", "-o", "proto_version=1",
         "-o", "publication_names=pub", "-f", "/dev/null", "-E", lsn_text(end_lsn), "--no-loop"],
        check=True, timeout=900,
    )  # fmt: skip
    return time.perf_counter() - started


def test_backlog_end_to_end_against_pg_recvlogical(pg_dsn: str, tmp_path: Path) -> None:
    slot = f"e2e_{uuid.uuid4().hex[:8]}"
    execute(
        pg_dsn,
        "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric(20,6))",
        "CREATE TABLE bench_end (x int)",
        "CREATE PUBLICATION pub FOR TABLE bench, bench_end",
    )
    (tmp_path / "schemas" / "tables").mkdir(parents=True)
    (tmp_path / "schemas" / "tables" / "bench.toml").write_text(TABLE_TOML)
    params = dsn_params(pg_dsn)
    config = tmp_path / "r.toml"
    config.write_text(
        f'schemas = "{tmp_path / "schemas"}"\n[source]\nkind = "postgres"\n[source.postgres]\n'
        f'host = "{params["host"]}"\nport = {params["port"]}\ndatabase = "{params["dbname"]}"\n'
        f'user = "{params["user"]}"\nsslmode = "disable"\nslot_name = "{slot}"\npublication_name = "pub"\n'
        f'[staging]\npath = "{tmp_path / "stage"}"\n[warehouse]\nkind = "duckdb"\n'
        f'path = "{tmp_path / "w.duckdb"}"\n[http]\nport = 0\n[log]\nlevel = "warning"\n{EXTRA}\n'
    )
    env = {**os.environ, "PYTHONPATH": CODE} if CODE else dict(os.environ)
    cwd = CODE or None  # ``python -m`` imports from the working directory first
    command = [sys.executable, "-m", "replicator", "run", "--once", "-c", str(config)]
    package = Path(CODE or Path(__file__).parents[2]) / "replicator"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True, env=env)
    # The slot and the (empty) copy:
    subprocess.run(command, check=True, env=env, cwd=cwd, timeout=300, capture_output=True)
    execute(pg_dsn, "SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')")
    for lo in range(1, ROWS + 1, TXN):
        execute(
            pg_dsn,
            f"INSERT INTO bench SELECT g, g, 'value ' || g, now(), g / 7.0 "
            f"FROM generate_series({lo}, {min(lo + TXN - 1, ROWS)}) g",
        )
    for lo in range(1, ROWS + 1, TXN):
        execute(pg_dsn, f"UPDATE bench SET a = a + 1, d = d * 2 WHERE id BETWEEN {lo} AND {lo + TXN - 1}")
    [(end,)] = execute(pg_dsn, "SELECT pg_current_wal_insert_lsn()::text")
    execute(pg_dsn, "INSERT INTO bench_end VALUES (1)")  # a record past --endpos: pg_recvlogical stops there
    neighbour = None
    if os.environ.get("REPLICATOR_BENCH_NEIGHBOUR"):
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core kept busy
    try:
        recv_seconds = _recv(params, "bench_recv", parse_lsn(str(end)))
        started, cpu = time.perf_counter(), _children_cpu()
        done = subprocess.run(
            command, check=False, env=env, cwd=cwd, timeout=900, capture_output=True, text=True
        )
        repl_seconds, repl_cpu = time.perf_counter() - started, _children_cpu() - cpu
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
        execute(
            pg_dsn,
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            f" WHERE slot_name IN ('bench_recv', '{slot}') AND NOT active",
        )
    assert done.returncode == 0, done.stderr[-3000:]
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        row = con.execute("SELECT count(*), sum(a) FROM public.bench").fetchone()
    assert row == (ROWS, ROWS * (ROWS + 1) // 2 + ROWS), row
    total = 2 * ROWS
    recv_rate, repl_rate = total / recv_seconds, total / repl_seconds
    print(
        f"\n{total:,} changes end to end: pg_recvlogical {recv_rate:,.0f} rows/s ({recv_seconds:.1f} s); "
        f"replicator run --once {repl_rate:,.0f} rows/s ({repl_seconds:.1f} s, from process start; "
        f"{repl_cpu:.1f} s CPU); "
        f"ratio {repl_rate / recv_rate:.2f}; load {os.getloadavg()[0]:.1f}; code {CODE or 'this checkout'}"
        f"{'; with a CPU-bound neighbour' if neighbour is not None else ''}"
    )
