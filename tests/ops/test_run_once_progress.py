"""On a terminal: ``run --once`` on a backlog shows per table the changes merged of those captured so far
(``replicator.obs.progress.merging``), and ``status`` fits the terminal's width; off a terminal the output
is as before (JSON log lines; 120 columns)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.daemon import Feed, daemon_config, free_port
from tests.helpers.tty import run_cli_tty


def test_run_once_on_a_backlog_shows_changes_merged_of_those_captured_per_table(tmp_path: Path) -> None:
    feed = Feed(tmp_path / "feed", seed=61, flushes=8, changes=80)
    feed.release(8)
    cfg = daemon_config(tmp_path / "tty.toml", source=feed.live, port=free_port(), duckdb="tty.duckdb")
    code, shown = run_cli_tty("run", "--once", "-c", str(cfg), tty=True)
    assert code == 0, shown[-3000:]
    # The last redraw: every table with all its changes merged, e.g. "merge dbo.payments ... 212 of 212".
    finals = dict(re.findall(r"merge (dbo\.\w+) .*?([\d,]+ of [\d,]+) changes merged", shown))
    assert set(finals) == {"dbo.patients", "dbo.payments", "dbo.payment_plans", "dbo.insurance_claims",
                           "dbo.practices"}, shown[-3000:]  # fmt: skip
    for table, counts in finals.items():
        merged, known = counts.split(" of ")
        assert merged == known and int(known.replace(",", "")) > 0, (table, counts)

    cfg2 = daemon_config(tmp_path / "pipe.toml", source=feed.live, port=free_port(), duckdb="pipe.duckdb")
    (tmp_path / "pipe_stage").mkdir()
    cfg2.write_text(cfg2.read_text().replace(str(tmp_path / "stage"), str(tmp_path / "pipe_stage")))
    code, out = run_cli_tty("run", "--once", "-c", str(cfg2), tty=False)
    assert code == 0, out[-3000:]
    assert "changes merged" not in out
    assert all(json.loads(line) for line in out.splitlines() if line.strip())


def test_status_fits_the_terminal_it_prints_to(tmp_path: Path) -> None:
    """``status`` draws its tables with rich's renderer to the terminal's width: on 80 columns no line is
    longer and no table name is cut; off a terminal, 120 columns as before."""
    feed = Feed(tmp_path / "feed", seed=62, flushes=2)
    feed.release(2)
    bad = feed.live / "dbo" / "payments" / "20240304-1459000000.csv"  # stops payments: a long explanation
    bad.write_text("I,2024-03-04 14:59:00.000000,1,2\n")
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=free_port())
    assert run_cli_tty("run", "--once", "-c", str(cfg), tty=False)[0] == 1  # exits 1: a table is stopped
    code, narrow = run_cli_tty("status", "-c", str(cfg), tty=True, columns=80)
    assert code == 0, narrow
    lines = narrow.splitlines()
    assert max(len(line) for line in lines) <= 80, narrow
    assert "STOPPED dbo.payments: column_count" in narrow
    for table in ("dbo.insurance_claims", "dbo.payment_plans"):
        assert any(line.startswith(table + " ") for line in lines), narrow
    code, wide = run_cli_tty("status", "-c", str(cfg), tty=True, columns=200)
    assert code == 0 and max(len(line) for line in wide.splitlines()) > 80, wide
    piped = subprocess.run(
        [sys.executable, "-m", "replicator", "status", "-c", str(cfg)], capture_output=True, text=True,
        env={**os.environ, "COLUMNS": "80"}, check=True,
    )  # fmt: skip
    assert max(len(line) for line in piped.stdout.splitlines()) <= 120
