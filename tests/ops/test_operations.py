"""Operations with real processes: pause/resume/resync, two daemons on one config, SIGTERM mid-batch, and a
target PostgreSQL restarted under a running daemon.

The DMS feed is generated whole into ``full/`` and released into the daemon's folder a flush at a time by
atomic renames, the way S3 makes a DMS file appear at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.helpers.daemon import (
    TOKEN,
    DaemonProcess,
    Feed,
    PrivateCluster,
    daemon_config,
    free_port,
    http,
    tables_of,
    wait_for,
)
from tests.helpers.support import assert_same_state, duckdb_state, pg_env, postgres_state, run_cli


def only(state: dict[str, dict[Any, Any]], names: set[str]) -> dict[str, dict[Any, Any]]:
    return {k: v for k, v in state.items() if k in names}


OTHERS = {"practices", "patients", "payment_plans", "insurance_claims"}


# -- pause / resume / resync without a daemon (CLI writes the control table itself) -----------------------


def test_a_table_paused_from_the_cli_is_staged_but_not_merged_and_resume_merges_its_backlog(
    tmp_path: Path,
) -> None:
    feed = Feed(tmp_path, seed=31)
    feed.release(feed.flushes)
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)

    paused = run_cli("pause", "dbo.payments", "--reason", "bad migration", "-c", str(cfg))
    assert paused.returncode == 0, paused.stderr
    listed = run_cli("tables", "-c", str(cfg), "--json")
    rows = {r["table"]: r for r in json.loads(listed.stdout)["tables"]}
    assert rows["dbo.payments"]["state"] == "paused"
    assert rows["dbo.payments"]["reason"] == "bad migration"
    assert rows["dbo.payments"]["changed_by"].startswith("cli:")
    assert rows["dbo.payments"]["since"] is not None
    assert rows["dbo.patients"]["state"] == "active"

    first = run_cli("run", "-c", str(cfg), "--once")
    assert first.returncode == 0, first.stderr
    expected = feed.expected()
    state = duckdb_state(tmp_path / "wh.duckdb")
    assert state["payments"] == {}, "a paused table was merged"
    assert_same_state(only(state, OTHERS), only(expected, OTHERS))
    staged = list((tmp_path / "stage" / "batches" / "dbo.payments").glob("*.json"))
    assert staged, "capture and staging of the paused table must go on"

    # The state survives the restart above and is shown by status; resume merges the backlog in order.
    status = run_cli("status", "-c", str(cfg))
    assert "paused" in status.stdout and "bad migration" in status.stdout
    resumed = run_cli("resume", "dbo.payments", "-c", str(cfg))
    assert resumed.returncode == 0, resumed.stderr
    second = run_cli("run", "-c", str(cfg), "--once")
    assert second.returncode == 0, second.stderr
    assert_same_state(duckdb_state(tmp_path / "wh.duckdb"), expected)


def test_resync_reloads_one_table_from_scratch_and_repairs_a_damaged_target(tmp_path: Path) -> None:
    import duckdb

    feed = Feed(tmp_path, seed=32)
    feed.release(feed.flushes)
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)
    assert run_cli("run", "-c", str(cfg), "--once").returncode == 0
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute('DELETE FROM "dbo"."patients" WHERE patient_id % 2 = 0')
    con.execute('UPDATE "dbo"."payments" SET amount = 0')  # another table: untouched
    damaged_payments = con.execute('SELECT count(*) FROM "dbo"."payments" WHERE amount = 0').fetchall()
    con.close()

    out = run_cli("resync", "dbo.patients", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "resyncing" in out.stdout
    rerun = run_cli("run", "-c", str(cfg), "--once")
    assert rerun.returncode == 0, rerun.stderr
    assert '"event": "resync_started"' in rerun.stderr and '"event": "resync_finished"' in rerun.stderr

    expected = feed.expected()
    state = duckdb_state(tmp_path / "wh.duckdb")
    assert state["patients"] == expected["patients"]
    assert_same_state(only(state, OTHERS - {"patients"}), only(expected, OTHERS - {"patients"}))
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert (
        con.execute('SELECT count(*) FROM "dbo"."payments" WHERE amount = 0').fetchall() == damaged_payments
    )
    con.close()
    rows = {r["table"]: r for r in json.loads(run_cli("tables", "-c", str(cfg), "--json").stdout)["tables"]}
    assert rows["dbo.patients"]["state"] == "active"
    assert rows["dbo.patients"]["reason"] == "resync finished"


# -- a live daemon on PostgreSQL ----------------------------------------------------------------------------


def pg_state_of(dsn: str, names: set[str]) -> dict[str, dict[Any, Any]]:
    try:
        return only(postgres_state(dsn), names)
    except psycopg2.Error:
        return {}


def test_pausing_one_table_under_a_running_daemon_freezes_it_while_the_others_keep_up(
    tmp_path: Path, pg_dsn: str
) -> None:
    feed = Feed(tmp_path, seed=33, flushes=8)
    feed.release(2)
    port = free_port()
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=port)
    d = DaemonProcess(cfg, port, env=pg_env(pg_dsn))
    try:
        d.wait_ready()
        wait_for(lambda: postgres_state(pg_dsn) == feed.expected(), 60, "initial catch-up")
        code, row = http(
            "POST", f"{d.url}/tables/dbo.payments/pause", token=TOKEN, body={"reason": "backfill"}
        )
        assert code == 200 and row["state"] == "paused", row
        frozen = postgres_state(pg_dsn)["payments"]

        feed.release(6)
        expected = feed.expected()
        assert expected["payments"] != frozen, "the test needs new payment changes"
        wait_for(lambda: pg_state_of(pg_dsn, OTHERS) == only(expected, OTHERS), 60, "others keep up")
        wait_for(lambda: tables_of(d.url)["dbo.payments"]["backlog_batches"] > 0, 30, "payments staged")
        time.sleep(1.0)  # a few more rounds: nothing of payments may be merged meanwhile
        assert postgres_state(pg_dsn)["payments"] == frozen

        code, row = http("POST", f"{d.url}/tables/dbo.payments/resume", token=TOKEN)
        assert code == 200 and row["state"] == "active"
        wait_for(lambda: postgres_state(pg_dsn) == expected, 60, "payments catch up after resume")
    finally:
        assert d.terminate() == 0
    assert_same_state(postgres_state(pg_dsn), feed.expected())


def test_two_daemons_on_one_config_take_turns_and_the_second_takes_over_when_the_first_is_killed(
    tmp_path: Path, pg_dsn: str
) -> None:
    feed = Feed(tmp_path, seed=34, flushes=6)
    feed.release(2)
    pa, pb = free_port(), free_port()
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)
    single = {**pg_env(pg_dsn), "REPLICATOR__LEASE__MODE": "single"}  # one merges, the other stands by
    a = DaemonProcess(cfg, pa, env={**single, "REPLICATOR__HTTP__PORT": str(pa)}, name="a")
    a.wait_ready()
    b = DaemonProcess(cfg, pb, env={**single, "REPLICATOR__HTTP__PORT": str(pb)}, name="b")
    try:
        wait_for(lambda: http("GET", f"{b.url}/healthz")[0] == 200, 30, "b alive")

        def b_waits_for_the_lease() -> bool:
            code, doc = http("GET", f"{b.url}/readyz")
            assert code == 503, doc  # never ready while a holds the lease
            return "waiting_for_lease" in doc["reasons"]

        # b passes through "starting" first; on a busy machine that takes a moment.
        wait_for(b_waits_for_the_lease, 30, "b reports waiting_for_lease")
        feed.release(2)
        wait_for(lambda: postgres_state(pg_dsn) == feed.expected(), 60, "a merges")
        assert a.events("batch_applied") and not b.events("batch_applied")
        assert http("GET", f"{b.url}/readyz")[0] == 503

        a.kill()
        b.wait_ready(timeout=30)
        feed.release(2)
        wait_for(lambda: postgres_state(pg_dsn) == feed.expected(), 60, "b takes over")
        assert b.events("batch_applied")
    finally:
        if a.proc.poll() is None:
            a.kill()
        assert b.terminate() == 0
    assert_same_state(postgres_state(pg_dsn), feed.expected())


# -- lifecycle ----------------------------------------------------------------------------------------------


def test_sigterm_in_the_middle_of_a_batch_exits_0_within_the_grace_period_and_loses_nothing(
    tmp_path: Path,
) -> None:
    feed = Feed(tmp_path, seed=35, patients=300, flushes=10, changes=300)
    feed.release(feed.flushes)
    port = free_port()
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=port, max_rows=200)
    d = DaemonProcess(cfg, port)
    wait_for(lambda: bool(d.events("batch_applied")), 60, lambda: d.log.read_text()[-2000:])
    sent = time.monotonic()
    rc = d.terminate(timeout=30)
    took = time.monotonic() - sent
    assert rc == 0, d.log.read_text()[-2000:]
    assert took < 10, f"took {took:.1f} s, the grace period is 10 s"
    assert d.events("shutdown_requested")
    log = d.log.read_text()
    assert TOKEN not in log

    rerun = run_cli("run", "-c", str(cfg), "--once")
    assert rerun.returncode == 0, rerun.stderr
    assert_same_state(duckdb_state(tmp_path / "wh.duckdb"), feed.expected())


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A PostgreSQL cluster of this test only (never the shared one), with stop and start functions."""
    cluster = PrivateCluster("replicator-pg-")
    try:
        cluster.start()
        yield cluster.dsn, cluster.stop, cluster.start
    finally:
        cluster.close()


def test_the_daemon_recovers_by_itself_when_the_target_postgres_restarts(
    tmp_path: Path, own_postgres: tuple[str, Callable[[], None], Callable[[], None]]
) -> None:
    dsn, stop_pg, start_pg = own_postgres
    feed = Feed(tmp_path, seed=36, flushes=6)
    feed.release(2)
    port = free_port()
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=port)
    d = DaemonProcess(cfg, port, env=pg_env(dsn))
    try:
        d.wait_ready()
        wait_for(lambda: pg_state_of(dsn, OTHERS | {"payments"}) == feed.expected(), 60, "first catch-up")
        stop_pg()
        feed.release(2)
        wait_for(lambda: not d.ready(), 30, "not ready while the warehouse is down")
        time.sleep(1)
        start_pg()
        feed.release(2)
        wait_for(lambda: pg_state_of(dsn, OTHERS | {"payments"}) == feed.expected(), 90, "recovered")
        d.wait_ready()
    finally:
        assert d.terminate() == 0
    assert d.events("term_failed"), "the outage should have been noticed and retried"
