"""Issue 17, point 6: PHI at rest. With ``[s3] sse = "aws:kms"`` every object the replicator writes to S3
(staged Parquet, manifests, source state, quarantine notes and data) is encrypted with the configured KMS key,
and with ``expected_bucket_owner`` every S3 call names the account that must own the bucket. Checked on the
S3 test server (moto records the encryption of each object; the owner header is read off each request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from replicator import config
from replicator.storage import S3Settings, S3Store
from tests.helpers.daemon import Feed
from tests.helpers.deploy import DEPLOY, DMS_PARAMS, SECRETS, task_environment
from tests.helpers.support import ROOT, run_cli

KEY = "arn:aws:kms:us-east-1:123456789012:key/0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e"
OWNER = "123456789012"


def _encryption(client: Any, bucket: str, prefix: str) -> dict[str, tuple[str | None, str | None]]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            head = client.head_object(Bucket=bucket, Key=obj["Key"])
            out[obj["Key"]] = (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId"))
    return out


def test_every_write_is_sse_kms_and_every_call_names_the_bucket_owner(
    tmp_path: Path, s3_settings: S3Settings, s3_bucket: str
) -> None:
    settings = S3Settings(
        endpoint_url=s3_settings.endpoint_url, region="us-east-1", sse="aws:kms", sse_kms_key_id=KEY,
        expected_bucket_owner=OWNER,
    )  # fmt: skip
    store = S3Store(s3_bucket, "stage", settings)
    owners: list[tuple[str, str | None]] = []

    def record(request: Any, **_: Any) -> None:
        owner = request.headers.get("x-amz-expected-bucket-owner")
        owners.append((request.method, owner.decode() if isinstance(owner, bytes) else owner))

    store.client.meta.events.register("before-send.s3.*", record)
    big = tmp_path / "big.parquet"
    big.write_bytes(b"\x01" * (9 * 1024 * 1024))  # above the multipart threshold: each part is encrypted
    small = tmp_path / "small.parquet"
    small.write_bytes(b"PAR1")
    store.put("batches/dbo.t/1.json", b"{}")
    store.put_file("batches/dbo.t/1.parquet", small)
    store.put_file("batches/dbo.t/2.parquet", big)
    assert [o.key for o in store.list("batches/")] == [
        "batches/dbo.t/1.json", "batches/dbo.t/1.parquet", "batches/dbo.t/2.parquet"
    ]  # fmt: skip
    assert store.get("batches/dbo.t/1.json") == b"{}"
    store.download("batches/dbo.t/1.parquet", tmp_path / "back")
    store.delete("batches/dbo.t/1.json")

    client = boto3.client("s3", endpoint_url=s3_settings.endpoint_url, region_name="us-east-1")
    assert _encryption(client, s3_bucket, "stage/") == {
        "stage/batches/dbo.t/1.parquet": ("aws:kms", KEY),
        "stage/batches/dbo.t/2.parquet": ("aws:kms", KEY),
    }
    assert {"GET", "PUT", "POST", "DELETE"} <= {method for method, _ in owners}, owners
    assert all(owner == OWNER for _, owner in owners), owners


def test_a_daemon_run_leaves_only_sse_kms_objects_in_staging(
    tmp_path: Path, s3_settings: S3Settings, s3_bucket: str
) -> None:
    feed = Feed(tmp_path, seed=47, flushes=2)
    feed.release(2)
    # A file with a bad row: the quarantine writes a note and the row's data.
    (feed.live / "dbo" / "practices" / "20240304-1500000000.csv").write_text("I,too,few\n")
    cfg = tmp_path / "r.toml"
    cfg.write_text(
        f"""schemas = "{ROOT / "schemas"}"
[source]
path = "{feed.live}"
[source.dms]
timestamp_column_name = "dms_commit_ts"
bad_input_policy = "quarantine"
[staging]
path = "s3://{s3_bucket}/stage"
[warehouse]
kind = "duckdb"
path = "{tmp_path / "wh.duckdb"}"
[http]
port = 0
[s3]
endpoint_url = "{s3_settings.endpoint_url}"
region = "us-east-1"
sse = "aws:kms"
sse_kms_key_id = "{KEY}"
expected_bucket_owner = "{OWNER}"
"""
    )
    # A paused table keeps its batches staged (Parquet and manifest) for the check below.
    assert run_cli("pause", "dbo.payments", "--reason", "keep staged", "-c", str(cfg)).returncode == 0
    out = run_cli("run", "--once", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    client = boto3.client("s3", endpoint_url=s3_settings.endpoint_url, region_name="us-east-1")
    objects = _encryption(client, s3_bucket, "stage/")
    kinds = {k.rsplit(".", 1)[-1] for k in objects}
    assert {"parquet", "json"} <= kinds, objects
    assert any(k.startswith("stage/_quarantine/") for k in objects), objects
    assert any(k.startswith("stage/_state/") for k in objects), objects
    plain = {k: v for k, v in objects.items() if v != ("aws:kms", KEY)}
    assert not plain, plain


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"REPLICATOR__S3__SSE": "aws:kms"}, "s3.sse_kms_key_id"),
        ({"REPLICATOR__S3__SSE_KMS_KEY_ID": KEY}, "s3.sse_kms_key_id"),
        ({"REPLICATOR__S3__EXPECTED_BUCKET_OWNER": "me"}, "s3.expected_bucket_owner"),
    ],
)
def test_incomplete_encryption_settings_are_configuration_errors(env: dict[str, str], problem: str) -> None:
    cfg = config.load(
        None, environ={"REPLICATOR__SOURCE__PATH": "/x", "REPLICATOR__STAGING__PATH": "/y", **env}
    )
    assert any(problem in p for p in config.validate(cfg)), config.validate(cfg)


def test_the_stack_encrypts_staging_with_its_kms_key_and_checks_the_bucket_owner() -> None:
    env = task_environment(dict(DMS_PARAMS, KmsKeyArn=KEY), SECRETS)
    cfg = config.load(DEPLOY / "replicator.toml", environ=env)
    assert config.validate(cfg) == []
    assert (cfg.s3.sse, cfg.s3.sse_kms_key_id) == ("aws:kms", KEY)
    assert cfg.s3.expected_bucket_owner.isdigit() and len(cfg.s3.expected_bucket_owner) == 12
    without = config.load(DEPLOY / "replicator.toml", environ=task_environment(dict(DMS_PARAMS), SECRETS))
    assert without.s3.sse == "" and config.validate(without) == []


def test_the_stack_keeps_tls_to_the_warehouse_and_the_source_at_verify_full() -> None:
    params = dict(DMS_PARAMS, SourceKind="postgres", SourcePostgresHost="orders.example.internal")
    params["SourcePasswordSecretArn"] = "arn:aws:x:pg"
    cfg = config.load(DEPLOY / "replicator.toml", environ=task_environment(params, SECRETS))
    assert config.validate(cfg) == []
    assert cfg.warehouse.sslmode == "verify-full"
    assert cfg.source.postgres.sslmode == "verify-full"
