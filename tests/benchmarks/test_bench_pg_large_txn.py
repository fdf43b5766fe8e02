"""PostgreSQL source memory: one 2,000,000-row transaction replicates (source -> staged -> DuckDB) with the
replicator's peak RSS under 400 MB (issue 4). The replicator runs in a child process so its own peak RSS is
measured, not this test's. ``REPLICATOR_BENCH_ROWS`` scales it down for a quick look."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers.bench import CHILD
from tests.helpers.pg import execute

pytestmark = pytest.mark.benchmark

ROWS = int(os.environ.get("REPLICATOR_BENCH_LARGE_TXN_ROWS", "2000000"))
LIMIT_MB = 400

TABLE_TOML = """schema = "public"
name = "big"
primary_key = ["id"]
[columns]
id = "bigint not null"
a = "integer"
b = "text"
c = "timestamptz"
d = "numeric"
"""


def test_a_two_million_row_transaction_replicates_with_peak_rss_under_400_mb(
    pg_dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "schemas" / "tables").mkdir(parents=True)
    (tmp_path / "schemas" / "tables" / "big.toml").write_text(TABLE_TOML)
    slot = f"big_{uuid.uuid4().hex[:8]}"
    execute(
        pg_dsn,
        "CREATE TABLE big (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric)",
        "CREATE PUBLICATION pub FOR TABLE big",
    )
    # A first run creates the slot and copies the (empty) table before the load: the second only streams.
    first = subprocess.run(
        [sys.executable, "-c", CHILD, pg_dsn, str(tmp_path), slot, "0/0"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    try:
        [(end,)] = execute(
            pg_dsn,
            f"INSERT INTO big SELECT g, g, 'value ' || g, now(), g / 7.0 FROM generate_series(1, {ROWS}) g",
            "SELECT pg_current_wal_lsn()::text",
        )
        run = subprocess.run(
            [sys.executable, "-c", CHILD, pg_dsn, str(tmp_path), slot, str(end)],
            capture_output=True, text=True, timeout=1500, check=False,
        )  # fmt: skip
    finally:
        execute(pg_dsn, f"SELECT pg_drop_replication_slot('{slot}')")
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(
        f"\n{ROWS:,}-row transaction: replicated in {result['seconds']:.1f} s, "
        f"replicator peak RSS {result['rss_mb']:.0f} MB (bound {LIMIT_MB} MB)"
    )
    assert (result["rows"], result["distinct"]) == (ROWS, ROWS)
    assert result["rss_mb"] < LIMIT_MB
