"""DMS end to end (issue 16): a 3-table feed of 470k changes (full-load files, then CDC files of inserts and
updates), from a local folder to merged in DuckDB by ``replicator run --once`` with default settings, timed
from process start to exit; the target is checked. Prints rows/s. ``BENCH_DMS_E2E_SCALE`` scales the feed
(default 1.0).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.benchmark

SCALE = float(os.environ.get("BENCH_DMS_E2E_SCALE", "1.0"))
# (table, full-load rows, CDC inserts, CDC updates): 470k changes at scale 1
FEED = [
    ("payments", 150_000, 30_000, 40_000),
    ("claims", 100_000, 20_000, 30_000),
    ("notes", 60_000, 20_000, 20_000),
]
TABLE_TOML = (
    'schema = "bench"\nname = "{name}"\nprimary_key = ["id"]\n[columns]\nid = "bigint not null"\n'
    'patient_id = "bigint"\namount = "numeric(12,2)"\nmethod = "varchar(20)"\nposted_at = "timestamp"\n'
    'note = "text"\n'
)
FILE_ROWS = 50_000


def _row(i: int, version: int) -> str:
    return f"{i},{i % 5000},{(i + version) % 997}.25,card,2026-11-01 10:00:00,note {version}"


def _write(folder: Path, name: str, load: int, inserts: int, updates: int) -> int:
    table = folder / "bench" / name
    table.mkdir(parents=True)
    for f, start in enumerate(range(0, load, FILE_ROWS)):
        lines = (_row(i, 0) + "\n" for i in range(start, min(load, start + FILE_ROWS)))
        (table / f"LOAD{f + 1:08X}.csv").write_text("".join(lines))
    cdc = [f"I,{_row(i, 0)}" for i in range(load, load + inserts)]
    cdc += [f"U,{_row(i, 1)}" for i in range(updates)]
    for f, start in enumerate(range(0, len(cdc), FILE_ROWS)):
        (table / f"20261101-{10_000_000 + f:010d}.csv").write_text(
            "\n".join(cdc[start : start + FILE_ROWS]) + "\n"
        )
    return load + inserts + updates


def test_dms_feed_end_to_end_into_duckdb(tmp_path: Path) -> None:
    feed = [(n, int(a * SCALE), int(b * SCALE), int(c * SCALE)) for n, a, b, c in FEED]
    total = sum(_write(tmp_path / "dms", *t) for t in feed)
    schemas = tmp_path / "schemas" / "tables"
    schemas.mkdir(parents=True)
    for name, *_ in feed:
        (schemas / f"{name}.toml").write_text(TABLE_TOML.format(name=name))
    config = tmp_path / "r.toml"
    config.write_text(
        f'schemas = "{tmp_path / "schemas"}"\n[source]\npath = "{tmp_path / "dms"}"\n'
        f'[staging]\npath = "{tmp_path / "stage"}"\n[warehouse]\nkind = "duckdb"\n'
        f'path = "{tmp_path / "w.duckdb"}"\n[http]\nport = 0\n[log]\nlevel = "warning"\n'
    )
    started = time.perf_counter()
    code = os.environ.get("REPLICATOR_BENCH_CODE", "")  # another checkout, for before/after
    env = {**os.environ, "PYTHONPATH": code} if code else None
    done = subprocess.run(
        [sys.executable, "-m", "replicator", "run", "--once", "-c", str(config)],
        check=False, capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        for name, load, inserts, _ in feed:
            row = con.execute(f"SELECT count(*) FROM bench.{name}").fetchone()
            assert row == (load + inserts,), (name, row)
    print(
        f"\nDMS end to end: {total:,} changes in 3 tables (CSV, local folder) -> DuckDB, run --once from"
        f" process start: {seconds:.1f} s, {total / seconds:,.0f} rows/s; load {os.getloadavg()[0]:.1f}"
    )
