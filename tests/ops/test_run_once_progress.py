"""``run --once`` on a backlog shows, on a terminal only, per table the changes merged of those captured so
far (``replicator.obs.progress.merging``); off a terminal its output is the JSON log lines, as before."""

from __future__ import annotations

import json
import re
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
