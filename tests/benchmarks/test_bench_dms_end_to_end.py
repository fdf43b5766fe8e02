"""DMS end to end (issue 16): a 3-table feed of 470k changes (full-load files, then CDC files of inserts and
updates), CSV and Parquet, from a local folder to merged in DuckDB by ``replicator run --once`` with default
settings, timed from process start to exit; the target is checked. Prints rows/s. ``BENCH_DMS_E2E_SCALE``
scales the feed (default 1.0).

The package's bytecode is compiled before the timed run (``compileall``, into its ``__pycache__``), as
``pip install`` does for the image: this machine's ``PYTHONDONTWRITEBYTECODE=1`` would otherwise make every
run compile the whole package from source first (~0.15-0.2 s), which no deployed process does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
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


def _parquet(path: Path, rows: list[tuple[str, int, int]]) -> None:
    """DMS's Parquet: typed columns, ``Op`` first in CDC files (ops given), snappy (DMS's default)."""
    ids = [i for _, i, _ in rows]
    cols = {"Op": pa.array([op for op, _, _ in rows])} if rows[0][0] else {}
    cols |= {
        "id": pa.array(ids, pa.int64()),
        "patient_id": pa.array([i % 5000 for i in ids], pa.int64()),
        "amount": pa.array([f"{(i + v) % 997}.25" for _, i, v in rows]).cast(pa.decimal128(12, 2)),
        "method": pa.array(["card"] * len(rows)),
        "posted_at": pa.array(["2026-11-01 10:00:00"] * len(rows)).cast(pa.timestamp("us")),
        "note": pa.array([f"note {v}" for _, _, v in rows]),
    }
    pq.write_table(pa.table(cols), path, compression="snappy")


def _write(folder: Path, fmt: str, name: str, load: int, inserts: int, updates: int) -> int:
    table = folder / "bench" / name
    table.mkdir(parents=True)
    if fmt == "parquet":
        for f, start in enumerate(range(0, load, FILE_ROWS)):
            rows = [("", i, 0) for i in range(start, min(load, start + FILE_ROWS))]
            _parquet(table / f"LOAD{f + 1:08X}.parquet", rows)
        changes = [("I", i, 0) for i in range(load, load + inserts)] + [("U", i, 1) for i in range(updates)]
        for f, start in enumerate(range(0, len(changes), FILE_ROWS)):
            _parquet(table / f"20261101-{10_000_000 + f:010d}.parquet", changes[start : start + FILE_ROWS])
        return load + inserts + updates
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


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_dms_feed_end_to_end_into_duckdb(tmp_path: Path, fmt: str) -> None:
    feed = [(n, int(a * SCALE), int(b * SCALE), int(c * SCALE)) for n, a, b, c in FEED]
    total = sum(_write(tmp_path / "dms", fmt, *t) for t in feed)
    schemas = tmp_path / "schemas" / "tables"
    schemas.mkdir(parents=True)
    for name, *_ in feed:
        (schemas / f"{name}.toml").write_text(TABLE_TOML.format(name=name))
    config = tmp_path / "r.toml"
    config.write_text(
        f'schemas = "{tmp_path / "schemas"}"\n[source]\npath = "{tmp_path / "dms"}"\n'
        f'[source.dms]\ndata_format = "{fmt}"\n'
        f'[staging]\npath = "{tmp_path / "stage"}"\n[warehouse]\nkind = "duckdb"\n'
        f'path = "{tmp_path / "w.duckdb"}"\n[http]\nport = 0\n[log]\nlevel = "warning"\n'
    )
    code = os.environ.get("REPLICATOR_BENCH_CODE", "")  # another checkout, for before/after
    env = {**os.environ, "PYTHONPATH": code} if code else None
    package = Path(code or Path(__file__).parents[2]) / "replicator"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True, env=env)
    started = time.perf_counter()
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
        f"\nDMS end to end: {total:,} changes in 3 tables ({fmt}, local folder) -> DuckDB, run --once from"
        f" process start: {seconds:.1f} s, {total / seconds:,.0f} rows/s; load {os.getloadavg()[0]:.1f}"
    )
