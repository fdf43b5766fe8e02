"""``replicator demo``: write (or extend) the sample DMS feed, replicate it into DuckDB, print a summary.

The feed runs on real time: its commits end about now and never later, so the lag figures mean what they
say (a paused table's lag grows while its backlog waits). The closing hint is a command that works as
printed from where the demo was started: the ``replicator`` that runs it, by the shortest path that reaches
it, and the config by a path relative to the current folder when it lies below it.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from replicator import app as app_mod
from replicator.config import Config, ConfigError, load, resolve
from replicator.model import TableId
from replicator.ops import status as status_mod
from replicator.sql import quote_table
from replicator.stage import Stager
from replicator.storage import Quarantine


def demo(folder: Path, *, seed: int, files: int) -> int:
    """Generate (or extend) a sample DMS feed in ``folder`` and replicate it into DuckDB."""
    from replicator.demo import feed
    from replicator.ops.commands import run

    folder.mkdir(parents=True, exist_ok=True)
    dms = folder / "dms"
    now = datetime.now(UTC).replace(tzinfo=None)
    if dms.is_dir() and any(dms.iterdir()):
        # A live feed's next flushes: from the last one (or a few minutes ago, when that is older) up to now.
        feed.generate_more(dms, seed=seed, files=files, not_before=now - timedelta(minutes=files), until=now)
        print(f"added {files} CDC files to the sample DMS feed in {dms}")
    else:
        feed.generate(dms, seed=seed, start=now - timedelta(minutes=21), until=now)
        print(f"wrote a sample DMS feed (full load + CDC files) to {dms}")
    config_path = folder / "replicator.toml"
    config_path.write_text(demo_config(schemas_dir()))
    cfg = load(config_path)
    started = time.monotonic()
    code = run(cfg, once=True, stop=threading.Event())
    seconds = time.monotonic() - started
    if code != 0:
        return code
    _print_summary(cfg, seconds)
    print(f"\nnext: {next_command(config_path)}   (run the demo again to replicate more changes)")
    return 0


def next_command(config_path: Path) -> str:
    """``replicator status -c CONFIG`` in a form that works as printed from the current folder."""
    return f"{replicator_command()} status -c {_shown(config_path)}"


def replicator_command() -> str:
    """``replicator`` when that name on PATH is this installation; else the script's path, or
    ``python -m replicator`` when there is no script beside the interpreter."""
    script = Path(sys.executable).parent / "replicator"
    if not script.is_file():
        return f"{_shown(Path(sys.executable))} -m replicator"
    on_path = shutil.which("replicator")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "replicator"
    return _shown(script)


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when below it (``.venv/bin/replicator``), else absolute."""
    full = Path(os.path.abspath(path))
    try:
        return str(full.relative_to(Path.cwd()))
    except ValueError:
        return str(full)


def schemas_dir() -> Path:
    """The demo's table definitions: the repository's schemas/ folder (beside the package, or here)."""
    for candidate in (Path(__file__).resolve().parents[2] / "schemas", Path.cwd() / "schemas"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("cannot find the schemas/ folder; run the demo from the repository root")


def demo_config(schemas: Path) -> str:
    return f"""# Written by `replicator demo`: the embedded default, no servers and no cloud account.
schemas = "{schemas}"

[source]
kind = "dms"
path = "dms"            # AWS DMS S3-target layout, here in a local folder

[source.dms]
timestamp_column_name = "dms_commit_ts"

[staging]
path = "staging"        # Parquet batches (s3://bucket/prefix in production)

[warehouse]
kind = "duckdb"
path = "warehouse.duckdb"

[batch]
max_rows = 50000
max_age_seconds = 1.0

[log]
level = "warning"
"""


def _print_views(con: Any) -> None:
    """The views after the run (kept current by the merges), and the latest day of cash collected."""
    from replicator.views import read_status

    views = read_status(lambda sql: con.execute(sql).fetchall())
    if not views:
        return
    print(f"\n{'view':<36} {'mode':<12} {'rows':>6}")
    for v in views:
        result = con.execute(f"SELECT count(*) FROM {quote_table(TableId.parse(v.view))}").fetchone()
        print(f"{v.view:<36} {v.mode:<12} {result[0] if result else 0:>6}")
    cash = quote_table(TableId("reporting", "daily_cash_collected"))
    if any(v.view == "reporting.daily_cash_collected" for v in views):
        latest = con.execute(
            f"SELECT practice_id, paid_on, cash_collected, payments FROM {cash}"
            f" WHERE paid_on = (SELECT max(paid_on) FROM {cash}) ORDER BY practice_id"
        ).fetchall()
        for practice, day, amount, n in latest:
            print(f"  cash collected on {day} by practice {practice}: {amount} ({n} payments)")


def _print_summary(cfg: Config, seconds: float) -> None:
    import duckdb

    schemas = app_mod.load_schemas(cfg)
    staging = app_mod.open_staging(cfg)
    wh = app_mod.open_warehouse(cfg, read_only=True)
    try:
        rows = status_mod.collect(list(schemas), Stager(staging, Quarantine(staging)), wh)
        applied = {str(t): s.rows for t, s in wh.table_states().items()}
    finally:
        wh.close()
    con = duckdb.connect(resolve(cfg, cfg.warehouse.path), read_only=True)
    try:
        print(f"\nreplicated in {seconds:.1f} s into {resolve(cfg, cfg.warehouse.path)}\n")
        print(f"{'table':<24} {'rows':>8} {'changes applied':>16} {'lag s':>8}")
        for r in rows:
            result = con.execute(f"SELECT count(*) FROM {quote_table(TableId.parse(r.table))}").fetchone()
            count = result[0] if result else 0
            lag = "-" if r.lag_seconds is None else f"{r.lag_seconds:.1f}"
            print(f"{r.table:<24} {count:>8} {applied.get(r.table, 0):>16} {lag:>8}")
        _print_views(con)
    finally:
        con.close()
    quarantined = Quarantine(staging).items()
    if quarantined:
        # A note may stand for many rows of one batch (``Quarantine.put_rows``): count what was set aside.
        count = sum(int(str(n.get("rows") or 1)) for n in quarantined)
        print(f"\n{count} row(s) or file(s) quarantined under {staging.url}/_quarantine/")
