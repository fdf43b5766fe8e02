"""DMS files -> Parquet staging -> warehouse, through the real CLI, compared row by row with the reference."""

from __future__ import annotations

import json
from pathlib import Path

import boto3

from replicator.demo import feed as demo
from replicator.storage import S3Settings
from tests.helpers.support import (
    ROOT,
    assert_same_state,
    duckdb_state,
    expected_state,
    pg_env,
    postgres_state,
    run_cli,
    write_config,
)


def test_the_embedded_demo_ends_with_the_state_the_feed_implies(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    first = run_cli("demo", "--dir", str(work))
    assert first.returncode == 0, first.stderr
    assert "dbo.payments" in first.stdout and "rows" in first.stdout
    assert_same_state(duckdb_state(work / "warehouse.duckdb"), expected_state(work / "dms"))

    # A second run appends CDC files to the feed and replicates only what is new.
    second = run_cli("demo", "--dir", str(work), "--files", "3")
    assert second.returncode == 0, second.stderr
    assert_same_state(duckdb_state(work / "warehouse.duckdb"), expected_state(work / "dms"))

    status = run_cli("status", "-c", str(work / "replicator.toml"), "--json")
    assert status.returncode == 0, status.stderr
    tables = {t["table"]: t for t in json.loads(status.stdout)["tables"]}
    assert set(tables) == {
        "dbo.practices",
        "dbo.patients",
        "dbo.payment_plans",
        "dbo.payments",
        "dbo.insurance_claims",
    }
    for t in tables.values():
        assert t["applied_rows"] > 0 and t["backlog_batches"] == 0
        assert t["applied_through"] == t["staged_through"]
        assert t["last_commit_time"] is not None and t["lag_seconds"] is not None


def upload(folder: Path, s3: S3Settings, bucket: str, prefix: str) -> None:
    client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1")
    for path in sorted(folder.rglob("*.csv")):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_dms_files_in_s3_are_staged_in_s3_and_merged_into_postgres(
    tmp_path: Path, s3_settings: S3Settings, s3_bucket: str, pg_dsn: str
) -> None:
    feed = tmp_path / "feed"
    demo.generate(feed, seed=11, patients=120, cdc_files=8, changes_per_file=80)
    upload(feed, s3_settings, s3_bucket, "dms")
    cfg = write_config(
        tmp_path / "r.toml", source=f"s3://{s3_bucket}/dms", staging=f"s3://{s3_bucket}/staging", max_rows=300
    )
    env = {**pg_env(pg_dsn), "REPLICATOR__S3__ENDPOINT_URL": str(s3_settings.endpoint_url)}
    result = run_cli("run", "-c", str(cfg), "--once", env=env)
    assert result.returncode == 0, result.stderr
    assert_same_state(postgres_state(pg_dsn), expected_state(feed))

    # More files arrive; a second run applies only those.
    demo.generate_more(feed, seed=11, files=4)
    upload(feed, s3_settings, s3_bucket, "dms")
    result = run_cli("run", "-c", str(cfg), "--once", env=env)
    assert result.returncode == 0, result.stderr
    assert_same_state(postgres_state(pg_dsn), expected_state(feed))

    # Applied batches are removed from staging; nothing is left behind but the source's own state.
    client = boto3.client("s3", endpoint_url=s3_settings.endpoint_url, region_name="us-east-1")
    keys = [
        o["Key"]
        for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="staging/batches/").get("Contents", [])
    ]
    assert keys == []


def test_dms_files_in_s3_merge_into_duckdb(tmp_path: Path, s3_settings: S3Settings, s3_bucket: str) -> None:
    feed = tmp_path / "feed"
    demo.generate(feed, seed=5, patients=80, cdc_files=6, changes_per_file=60)
    upload(feed, s3_settings, s3_bucket, "dms")
    cfg = write_config(tmp_path / "r.toml", source=f"s3://{s3_bucket}/dms", staging=f"s3://{s3_bucket}/stage")
    result = run_cli(
        "run", "-c", str(cfg), "--once", env={"REPLICATOR__S3__ENDPOINT_URL": str(s3_settings.endpoint_url)}
    )
    assert result.returncode == 0, result.stderr
    assert_same_state(duckdb_state(tmp_path / "warehouse.duckdb"), expected_state(feed))


def test_check_reports_each_part_and_fails_on_an_unreachable_warehouse(tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    demo.generate(feed, seed=3, patients=20, cdc_files=1, changes_per_file=10)
    cfg = write_config(tmp_path / "r.toml", source=str(feed), staging=str(tmp_path / "stage"))
    ok = run_cli("check", "-c", str(cfg))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    schemas: 5 tables" in ok.stdout and "ok    staging" in ok.stdout

    bad = run_cli(
        "check", "-c", str(cfg),
        env={**pg_env("host=127.0.0.1 port=1 dbname=x"), "REPLICATOR__WAREHOUSE__PASSWORD": "pw-never-shown"},
    )  # fmt: skip
    assert bad.returncode == 1
    assert "FAIL  warehouse" in bad.stdout
    assert "pw-never-shown" not in bad.stdout + bad.stderr


def test_a_config_error_names_the_key_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text('[batch]\nmax_rows = "lots"\n')
    result = run_cli("run", "-c", str(cfg), "--once")
    assert result.returncode == 2
    assert "batch.max_rows: expected an integer" in result.stderr
    assert str(ROOT)  # the CLI ran from the repository root
