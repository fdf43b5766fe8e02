"""SIGKILL at each point between durable steps, then a clean rerun: no row missing, none applied twice."""

from __future__ import annotations

import signal
from pathlib import Path

import duckdb
import psycopg2
import pytest

from replicator import demo
from tests.support import (
    assert_same_state,
    duckdb_state,
    expected_state,
    pg_env,
    postgres_state,
    run_cli,
    write_config,
)


def ledger_ids_duckdb(path: Path) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [r[0] for r in con.execute('SELECT batch_id FROM "_replicator"."batches"').fetchall()]
    finally:
        con.close()


def ledger_ids_postgres(dsn: str) -> list[str]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute('SELECT batch_id FROM "_replicator"."batches"')
        return [r[0] for r in cur.fetchall()]


@pytest.mark.parametrize("point", ["after_stage", "mid_merge", "after_merge"])
def test_duckdb_recovers_from_a_kill_at(point: str, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    demo.generate(feed, seed=21, patients=60, cdc_files=5, changes_per_file=60)
    cfg = write_config(tmp_path / "r.toml", source=str(feed), staging=str(tmp_path / "stage"), max_rows=40)

    crashed = run_cli("run", "-c", str(cfg), "--once", env={"REPLICATOR_CRASH_AT": point})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    rerun = run_cli("run", "-c", str(cfg), "--once")
    assert rerun.returncode == 0, rerun.stderr
    assert_same_state(duckdb_state(tmp_path / "warehouse.duckdb"), expected_state(feed))
    ids = ledger_ids_duckdb(tmp_path / "warehouse.duckdb")
    assert len(ids) == len(set(ids))
    if point == "after_merge":
        assert '"event": "batch_already_applied"' in rerun.stderr  # the ledger caught the replay


@pytest.mark.parametrize("point", ["after_stage", "mid_merge", "after_merge"])
def test_postgres_recovers_from_a_kill_at(point: str, tmp_path: Path, pg_dsn: str) -> None:
    feed = tmp_path / "feed"
    demo.generate(feed, seed=22, patients=60, cdc_files=5, changes_per_file=60)
    cfg = write_config(tmp_path / "r.toml", source=str(feed), staging=str(tmp_path / "stage"), max_rows=40)
    env = pg_env(pg_dsn)

    crashed = run_cli("run", "-c", str(cfg), "--once", env={**env, "REPLICATOR_CRASH_AT": point})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    rerun = run_cli("run", "-c", str(cfg), "--once", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_state(postgres_state(pg_dsn), expected_state(feed))
    ids = ledger_ids_postgres(pg_dsn)
    assert len(ids) == len(set(ids))


def test_a_kill_mid_merge_leaves_the_target_and_ledger_untouched(tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    demo.generate(feed, seed=23, patients=30, cdc_files=2, changes_per_file=30)
    cfg = write_config(
        tmp_path / "r.toml", source=str(feed), staging=str(tmp_path / "stage"), max_rows=10_000
    )
    crashed = run_cli("run", "-c", str(cfg), "--once", env={"REPLICATOR_CRASH_AT": "mid_merge"})
    assert crashed.returncode == -signal.SIGKILL
    assert ledger_ids_duckdb(tmp_path / "warehouse.duckdb") == []
    state = duckdb_state(tmp_path / "warehouse.duckdb")
    assert all(rows == {} for rows in state.values())


def test_sigterm_stops_the_daemon_cleanly_and_a_restart_finishes_the_job(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    feed = tmp_path / "feed"
    demo.generate(feed, seed=24, patients=60, cdc_files=4, changes_per_file=50)
    cfg = write_config(tmp_path / "r.toml", source=str(feed), staging=str(tmp_path / "stage"), max_rows=50)
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicator", "run", "-c", str(cfg)], stderr=subprocess.PIPE, text=True
    )
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "shutdown_requested" in err
    rerun = run_cli("run", "-c", str(cfg), "--once")
    assert rerun.returncode == 0, rerun.stderr
    assert_same_state(duckdb_state(tmp_path / "warehouse.duckdb"), expected_state(feed))
