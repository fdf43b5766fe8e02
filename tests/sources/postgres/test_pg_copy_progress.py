"""Progress for humans on the initial copy of PostgreSQL tables: on a terminal, each table's rows copied of
the catalog's estimate, the rate and the time left (drawn by rich, ``replicator.obs.progress``); off a
terminal, nothing but the JSON log lines."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from replicator.obs import progress
from tests.helpers.daemon import free_port, pg_source_config
from tests.helpers.pg import execute
from tests.helpers.tty import ANSI, run_cli_tty

ALPHA_ROWS = 30_200


def _run_once(cfg: Path, *, tty: bool) -> tuple[int, str]:
    return run_cli_tty("run", "--once", "-c", str(cfg), tty=tty)


def test_the_initial_copy_shows_rows_of_the_estimate_rate_and_time_left_on_a_terminal_only(
    tmp_path: Path,
    source_dsn: str,
    target_dsn: str,
) -> None:
    execute(
        source_dsn,
        "INSERT INTO public.alpha SELECT g, g, 'more ' || g FROM generate_series(1000, 30999) g",
        "ANALYZE public.alpha",
        "ANALYZE public.beta",
        # gamma's estimate is unknown: as never analyzed (autovacuum may have analyzed its 200 rows already)
        "ALTER TABLE public.gamma SET (autovacuum_enabled = false)",
        "UPDATE pg_class SET reltuples = -1 WHERE oid = 'public.gamma'::regclass",
    )
    execute(source_dsn, "VACUUM (SKIP_LOCKED) public.alpha")
    cfg, _slot = pg_source_config(tmp_path / "tty", source_dsn, target_dsn, free_port())
    code, shown = _run_once(cfg, tty=True)
    assert code == 0, shown[-3000:]
    text = shown
    # What is left on screen when the copy ends: each table's rows, its estimate, the rate.
    alpha = rf"copy public\.alpha .*{ALPHA_ROWS:,} rows \(estimated ~{ALPHA_ROWS:,}\) +[\d,]+ rows/s"
    assert re.search(alpha, text), text
    assert re.search(r"copy public\.beta .*200 rows \(estimated ~200\)", text), text
    assert re.search(r"copy public\.gamma .*200 rows \(no estimate\)", text), text  # no made-up total
    assert "left" in text

    # Off a terminal (ECS, a pipe): the JSON log lines only, as before.
    cfg2, _ = pg_source_config(tmp_path / "pipe", source_dsn, target_dsn, free_port())
    code, out = _run_once(cfg2, tty=False)
    assert code == 0, out[-3000:]
    assert "rows/s" not in out and "of ~" not in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines and all(json.loads(line) for line in lines)
    assert any(json.loads(line)["event"] == "table_copied" for line in lines)


def test_a_copy_under_way_shows_rows_of_the_estimate_and_time_left() -> None:
    """The same columns mid-copy (the copy above may be over between two redraws)."""
    out = io.StringIO()
    bars = Progress(*progress.columns(), console=Console(file=out, force_terminal=True, width=140))
    known = bars.add_task("public.alpha", total=1000.0, estimate=1000.0, verb="copy", unit="rows")
    unknown = bars.add_task("public.gamma", total=None, verb="copy", unit="rows")
    bars.start()
    bars.advance(known, 250)
    bars.advance(unknown, 40)
    time.sleep(0.3)
    bars.advance(known, 250)
    bars.stop()
    text = ANSI.sub("", out.getvalue())
    assert re.search(r"copy public\.alpha .*500 of ~1,000 rows +[\d,]+ rows/s +left 0:00:0\d", text), text
    assert re.search(r"copy public\.gamma .*40 of \? rows", text), text
