"""Scale-out (issue 18): throughput of 1, 2 and 3 tasks sharing one config on a multi-table DMS backlog, to
the real PostgreSQL target. Each run starts its tasks together on a fresh target and staging, and is timed
from the start until the ledger holds every change of the feed. Runs alternate (1, 2, 3, 1, 2, 3 ...) so
each ratio compares runs of the same minutes on this shared machine. Prints rows/s per run and the ratios.
``BENCH_SCALE_TABLES`` (default 12), ``BENCH_SCALE_FLUSHES`` (default 40), ``BENCH_SCALE_ROUNDS`` (2).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest

from tests.helpers.daemon import DaemonProcess, free_port
from tests.helpers.pg import Databases, fetch
from tests.helpers.scale import ManyTables, shared_config

pytestmark = pytest.mark.benchmark

TABLES = int(os.environ.get("BENCH_SCALE_TABLES", "12"))
FLUSHES = int(os.environ.get("BENCH_SCALE_FLUSHES", "40"))
ROUNDS = int(os.environ.get("BENCH_SCALE_ROUNDS", "2"))
CHANGES = 250  # per table and flush
ROWS = 2_000  # per table in the full load


def _run(root: Path, feed_dir: Path, tasks: int, target: str, total: int) -> float:
    root.mkdir()
    (root / "schemas").symlink_to(feed_dir.parent / "schemas")
    daemons = []
    started = time.monotonic()
    try:
        for i in range(tasks):
            port = free_port()
            cfg = shared_config(root / f"t{i}.toml", source=feed_dir, target=target, port=port, scope="bench")
            cfg.write_text(cfg.read_text().replace("max_rows = 50", "max_rows = 20000"))
            daemons.append(DaemonProcess(cfg, port, name=f"t{i}"))
        deadline = started + 900
        while time.monotonic() < deadline:
            try:
                done = fetch(target, "SELECT coalesce(sum(rows), 0) FROM _replicator.batches")[0][0]
            except Exception:
                done = 0
            if done >= total:
                return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(f"{tasks} tasks did not finish: {done} of {total}")
    finally:
        for d in daemons:
            d.kill()


@pytest.mark.timeout(3600)
def test_throughput_with_one_two_and_three_tasks(tmp_path: Path, pg_databases: Databases) -> None:
    feed = ManyTables(tmp_path / "dms", tables=TABLES, rows=ROWS, seed=18)
    feed.release(FLUSHES, changes=CHANGES)
    feed.write_schemas(tmp_path / "schemas")
    total = TABLES * (ROWS + CHANGES * FLUSHES)
    seconds: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for r in range(ROUNDS):
        for tasks in (1, 2, 3):
            target = pg_databases.new(prefix="bench")
            took = _run(tmp_path / f"run{r}_{tasks}", tmp_path / "dms", tasks, target, total)
            seconds[tasks].append(took)
            rate = total / took
            print(f"round {r}: {tasks} task(s): {total:,} changes in {took:.1f} s = {rate:,.0f} rows/s")
    one = statistics.median(seconds[1])
    for tasks in (1, 2, 3):
        mid = statistics.median(seconds[tasks])
        print(f"{tasks} task(s): median {total / mid:,.0f} rows/s, {one / mid:.2f}x one task")
    assert all(s for s in seconds.values())
