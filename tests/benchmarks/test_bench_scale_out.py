"""Scale-out (issue 18): throughput of 1, 2 and 3 tasks sharing one config on a multi-table DMS backlog, to
the real PostgreSQL target. Each run starts its tasks on a fresh target and staging with the full load only,
waits until they have shared the tables out and merged it, then drops the CDC backlog into the folder at
once and is timed until the ledger holds every change (start-up and rebalancing are not in the figure).
Runs alternate (1, 2, 3, 1, 2, 3 ...) so each ratio compares runs of the same minutes on this shared
machine. Prints rows/s per run and the ratios. ``BENCH_SCALE_TABLES`` (default 12), ``BENCH_SCALE_FLUSHES``
(default 100), ``BENCH_SCALE_ROUNDS`` (2).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.daemon import DaemonProcess, free_port
from tests.helpers.pg import Databases, fetch
from tests.helpers.scale import ManyTables, owners, shared_config

pytestmark = pytest.mark.benchmark

TABLES = int(os.environ.get("BENCH_SCALE_TABLES", "12"))
FLUSHES = int(os.environ.get("BENCH_SCALE_FLUSHES", "100"))
ROUNDS = int(os.environ.get("BENCH_SCALE_ROUNDS", "2"))
CHANGES = 250  # per table and flush
ROWS = 2_000  # per table in the full load


def _done(target: str) -> int:
    try:
        return int(fetch(target, "SELECT coalesce(sum(rows), 0) FROM _replicator.batches")[0][0])
    except Exception:  # not set up yet
        return 0


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.1)


def _run(root: Path, tasks: int, target: str) -> tuple[int, float]:
    """Changes of the backlog and seconds from dropping it in until all are in the ledger."""
    feed = ManyTables(root / "dms", tables=TABLES, rows=ROWS, seed=18)
    feed.write_schemas(root / "schemas")
    loaded = TABLES * ROWS
    daemons = []
    try:
        for i in range(tasks):
            port = free_port()
            cfg = shared_config(
                root / f"t{i}.toml", source=root / "dms", target=target, port=port, scope="bench"
            )
            cfg.write_text(cfg.read_text().replace("max_rows = 50", "max_rows = 20000"))
            daemons.append(DaemonProcess(cfg, port, name=f"t{i}"))
        spread = lambda: len(set(owners(target, "bench").values())) == tasks  # noqa: E731
        _wait(lambda: spread() and len(owners(target, "bench")) == TABLES and _done(target) >= loaded, 300,
              f"{tasks} tasks did not share the tables out and merge the load")  # fmt: skip
        staged = root / "backlog"
        feed.root = staged
        feed.release(FLUSHES, changes=CHANGES)
        total = TABLES * CHANGES * FLUSHES
        started = time.monotonic()
        for table in (staged / "fleet").iterdir():  # all at once: a rename per file
            for f in table.iterdir():
                os.replace(f, root / "dms" / "fleet" / table.name / f.name)
        _wait(lambda: _done(target) >= loaded + total, 900, f"{tasks} tasks did not finish the backlog")
        return total, time.monotonic() - started
    finally:
        for d in daemons:
            d.kill()


@pytest.mark.timeout(3600)
def test_throughput_with_one_two_and_three_tasks(tmp_path: Path, pg_databases: Databases) -> None:
    seconds: dict[int, list[float]] = {1: [], 2: [], 3: []}
    total = 0
    for r in range(ROUNDS):
        for tasks in (1, 2, 3):
            target = pg_databases.new(prefix="bench")
            total, took = _run(tmp_path / f"run{r}_{tasks}", tasks, target)
            seconds[tasks].append(took)
            rate = total / took
            print(f"round {r}: {tasks} task(s): {total:,} changes in {took:.1f} s = {rate:,.0f} rows/s")
    one = statistics.median(seconds[1])
    for tasks in (1, 2, 3):
        mid = statistics.median(seconds[tasks])
        print(f"{tasks} task(s): median {total / mid:,.0f} rows/s, {one / mid:.2f}x one task")
    assert all(s for s in seconds.values())
