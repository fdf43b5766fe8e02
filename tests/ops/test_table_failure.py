"""A table whose merge fails for good stops alone, says why in `status`, and heals once the cause is fixed."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2

from replicator.demo import feed as demo
from tests.helpers.support import (
    assert_same_state,
    expected_state,
    pg_env,
    postgres_state,
    run_cli,
    write_config,
)


def test_a_failing_table_stops_alone_with_its_reason_in_status_and_catches_up_after_the_fix(
    tmp_path: Path, pg_dsn: str
) -> None:
    feed = tmp_path / "feed"
    demo.generate(feed, seed=41, patients=40, cdc_files=3, changes_per_file=40)
    cfg = write_config(tmp_path / "r.toml", source=str(feed), staging=str(tmp_path / "stage"), max_rows=100)
    env = pg_env(pg_dsn)
    assert run_cli("check", "-c", str(cfg), env=env).returncode == 0

    # An operator's constraint on the target that every payment violates: a terminal failure for that table.
    first = run_cli("run", "-c", str(cfg), "--once", env=env)
    assert first.returncode == 0, first.stderr
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute('ALTER TABLE "dbo"."payments" ADD CONSTRAINT "no_money" CHECK (amount < 0) NOT VALID')
    demo.generate_more(feed, seed=41, files=3)

    failed = run_cli("run", "-c", str(cfg), "--once", env=env)
    assert failed.returncode == 1
    assert "dbo.payments" in failed.stderr and "no_money" in failed.stderr
    status = json.loads(run_cli("status", "-c", str(cfg), "--json", env=env).stdout)
    rows = {t["table"]: t for t in status["tables"]}
    assert "no_money" in (rows["dbo.payments"]["error"] or "")
    assert rows["dbo.payments"]["backlog_batches"] > 0
    # The other tables went on: everything but payments equals the feed.
    state, expected = postgres_state(pg_dsn), expected_state(feed)
    for table in ("practices", "patients", "payment_plans", "insurance_claims"):
        assert state[table] == expected[table], table
    assert state["payments"] != expected["payments"]

    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute('ALTER TABLE "dbo"."payments" DROP CONSTRAINT "no_money"')
    healed = run_cli("run", "-c", str(cfg), "--once", env=env)
    assert healed.returncode == 0, healed.stderr
    assert_same_state(postgres_state(pg_dsn), expected_state(feed))
    status = json.loads(run_cli("status", "-c", str(cfg), "--json", env=env).stdout)
    assert all(not t.get("error") for t in status["tables"])
