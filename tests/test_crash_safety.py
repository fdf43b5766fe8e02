"""SIGKILL at each point between two durable effects, then a clean rerun: no change missing, none applied
twice. "Applied once" is checked on the ledger and, on PostgreSQL, on the target's own writes
(``tests.helpers.guarantees``), since end states cannot see a batch applied twice."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from replicator.demo import feed as demo
from tests.helpers.guarantees import (
    assert_applied_exactly_once,
    assert_every_target_write_committed_with_one_ledger_row,
    audit_postgres,
    dms_changes,
    ledger_duckdb,
    ledger_postgres,
)
from tests.helpers.support import (
    SCHEMAS,
    assert_same_state,
    duckdb_state,
    expected_state,
    pg_env,
    postgres_state,
    run_cli,
    write_config,
)

# Every point between two durable effects, in the order a batch meets them (replicator.storage.faults).
POINTS = ["mid_stage", "after_stage", "after_ack", "mid_merge", "after_merge", "mid_remove"]
# The same points once some batches went through: the crash then leaves a mix of applied, staged and
# unread changes behind.
LATER = ["mid_stage@4", "after_stage@4", "after_ack@4", "mid_merge@3", "after_merge@3", "mid_remove@3"]


def crash_then_rerun(tmp_path: Path, seed: int, point: str, env: dict[str, str]) -> Path:
    """Run the demo feed until the crash point kills the daemon, then rerun it to the end. The rerun cuts
    batches of another size, so a change it stages again (instead of dropping it as already staged) lands
    in a batch whose range overlaps one staged before the crash."""
    feed = tmp_path / "feed"
    demo.generate(feed, seed=seed, patients=60, cdc_files=5, changes_per_file=60)
    stage = str(tmp_path / "stage")
    cfg = write_config(tmp_path / "r.toml", source=str(feed), staging=stage, max_rows=40)
    crashed = run_cli("run", "-c", str(cfg), "--once", env={**env, "REPLICATOR_CRASH_AT": point})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    cfg = write_config(tmp_path / "r.toml", source=str(feed), staging=stage, max_rows=25)
    rerun = run_cli("run", "-c", str(cfg), "--once", env=env)
    assert rerun.returncode == 0, rerun.stderr
    if point.partition("@")[0] == "after_merge":
        assert '"event": "batch_already_applied"' in rerun.stderr  # the ledger caught the replay
    left = [p.name for p in (tmp_path / "stage" / "batches").rglob("*.json")]
    assert left == [], f"staged batches left unapplied: {left}"
    return feed


@pytest.mark.parametrize("point", POINTS + LATER)
def test_duckdb_applies_every_change_exactly_once_after_a_kill_at(point: str, tmp_path: Path) -> None:
    feed = crash_then_rerun(tmp_path, 21, point, {})
    assert_same_state(duckdb_state(tmp_path / "warehouse.duckdb"), expected_state(feed))
    assert_applied_exactly_once(ledger_duckdb(tmp_path / "warehouse.duckdb"), dms_changes(feed))


@pytest.mark.parametrize("point", [*POINTS, "after_ack@4", "after_merge@3"])
def test_postgres_applies_every_change_exactly_once_after_a_kill_at(
    point: str, tmp_path: Path, pg_dsn: str
) -> None:
    audit_postgres(pg_dsn, SCHEMAS.values())
    feed = crash_then_rerun(tmp_path, 22, point, pg_env(pg_dsn))
    assert_same_state(postgres_state(pg_dsn), expected_state(feed))
    assert_applied_exactly_once(ledger_postgres(pg_dsn), dms_changes(feed))
    assert_every_target_write_committed_with_one_ledger_row(pg_dsn)


def test_a_kill_mid_merge_leaves_the_target_and_ledger_untouched(tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    demo.generate(feed, seed=23, patients=30, cdc_files=2, changes_per_file=30)
    cfg = write_config(
        tmp_path / "r.toml", source=str(feed), staging=str(tmp_path / "stage"), max_rows=10_000
    )
    crashed = run_cli("run", "-c", str(cfg), "--once", env={"REPLICATOR_CRASH_AT": "mid_merge"})
    assert crashed.returncode == -signal.SIGKILL
    assert ledger_duckdb(tmp_path / "warehouse.duckdb") == []
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
