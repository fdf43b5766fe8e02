"""`[source.dms]` takes the DMS endpoint's S3Settings as AWS names them, and `replicator dms-settings` writes
the section from what `aws dms describe-endpoints` prints."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import botocore.session
import duckdb
import pytest
from structlog.testing import capture_logs

from replicator import config
from replicator.demo.feed import generate
from replicator.sources.dms import settings
from tests.helpers.support import run_cli, write_config

# The DMS API model that boto3 ships: an independent list of every S3Settings member and its type.
S3_MODEL = botocore.session.get_session().get_service_model("dms").shape_for("S3Settings").members


def _example(shape: object) -> object:
    enum = getattr(shape, "enum", None)
    kind = getattr(shape, "type_name", "string")
    if enum:
        return enum[0]
    return {"boolean": True, "integer": 1}.get(kind, "x")


def _load(tmp_path: Path, dms: dict[str, object], path: str = "feed") -> config.Config:
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in dms.items())
    text = f'[source]\npath = "{path}"\n[source.dms]\n{lines}\n'
    (tmp_path / "r.toml").write_text(text)
    return config.load(tmp_path / "r.toml", environ={})


def test_every_s3settings_member_of_the_dms_api_is_accepted_in_snake_case(tmp_path: Path) -> None:
    assert sorted(S3_MODEL) == sorted(settings.S3_SETTINGS)
    dms = {settings.snake(name): _example(shape) for name, shape in S3_MODEL.items()}
    assert "parquet_timestamp_in_millisecond" in dms and "rfc4180" in dms
    cfg = _load(tmp_path, dms)
    assert cfg.source.dms.enable_statistics is True
    assert cfg.source.dms.encoding_type == "plain"


def test_parquet_version_takes_the_aws_spellings(tmp_path: Path) -> None:
    for spelling in ("PARQUET_1_0", "parquet-2-0"):
        assert _load(tmp_path, {"parquet_version": spelling}).source.dms.parquet_version == spelling
    with pytest.raises(config.ConfigError, match="parquet_version"):
        _load(tmp_path, {"parquet_version": "3"})


def test_rfc4180_in_the_aws_spelling_sets_the_reader(tmp_path: Path) -> None:
    assert _load(tmp_path, {"rfc4180": False}).source.dms.rfc_4180 is False
    assert _load(tmp_path, {"rfc_4180": False}).source.dms.rfc_4180 is False
    assert _load(tmp_path, {}).source.dms.rfc_4180 is True


def test_settings_that_do_not_change_reading_are_named_once_in_the_log(tmp_path: Path) -> None:
    from replicator.sources.dms.wiring import dms_options

    d = _load(tmp_path, {"enable_statistics": True, "encoding_type": "rle-dictionary", "csv_null_value": ""})
    with capture_logs() as logs:
        dms_options(d.source.dms)
        dms_options(d.source.dms)
    events = [e for e in logs if e["event"] == "dms_settings_ignored"]
    assert len(events) == 1
    assert set(events[0]["settings"]) == {"enable_statistics", "encoding_type"}


def test_bucket_folder_joins_the_source_path(tmp_path: Path) -> None:
    assert _load(tmp_path, {"bucket_folder": "sales"}, path="s3://b").source.path == "s3://b/sales"
    assert _load(tmp_path, {"bucket_folder": "sales"}, path="s3://b/sales").source.path == "s3://b/sales"
    # End to end: DMS wrote below <bucket>/sales/; the config names the bucket and the folder apart.
    generate(tmp_path / "bucket" / "sales", patients=20, cdc_files=2, changes_per_file=20)
    cfg = write_config(
        tmp_path / "replicator.toml", source=str(tmp_path / "bucket"), staging=str(tmp_path / "st")
    )
    ts = 'timestamp_column_name = "dms_commit_ts"'
    cfg.write_text(cfg.read_text().replace(ts, f'{ts}\nbucket_folder = "sales"'))
    run = run_cli("run", "--once", "-c", str(cfg))
    assert run.returncode == 0, run.stderr
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM dbo.patients").fetchone()
    finally:
        con.close()
    assert row is not None and row[0] >= 20


ENDPOINTS = {
    "Endpoints": [
        {"EndpointIdentifier": "orders-src", "EndpointType": "SOURCE", "EngineName": "sqlserver"},
        {
            "EndpointIdentifier": "orders-s3",
            "EndpointType": "TARGET",
            "EngineName": "s3",
            "S3Settings": {
                "ServiceAccessRoleArn": "arn:aws:iam::123456789012:role/dms-s3",
                "CsvRowDelimiter": "\\n",
                "CsvDelimiter": ",",
                "BucketFolder": "sales",
                "BucketName": "dms-bucket",
                "CompressionType": "GZIP",
                "DataFormat": "csv",
                "EncodingType": "rle-dictionary",
                "ParquetVersion": "PARQUET_1_0",
                "EnableStatistics": True,
                "IncludeOpForFullLoad": True,
                "TimestampColumnName": "dms_commit_ts",
                "ParquetTimestampInMillisecond": False,
                "DatePartitionEnabled": False,
                "CdcMaxBatchInterval": 60,
                "CsvNullValue": "NULL",
                "Rfc4180": True,
                "AddColumnName": True,
            },
        },
    ]
}


def test_dms_settings_prints_a_section_that_loads_as_the_endpoint_wrote_it(tmp_path: Path) -> None:
    source = tmp_path / "endpoint.json"
    source.write_text(json.dumps(ENDPOINTS))
    out = run_cli("dms-settings", str(source))
    assert out.returncode == 0, out.stderr
    assert "[source.dms]" in out.stdout and "orders-s3" in out.stdout
    doc = tomllib.loads(out.stdout)["source"]["dms"]
    assert doc["csv_row_delimiter"] == "\n"  # DMS prints the newline escaped
    assert doc["include_op_for_full_load"] is True and doc["add_column_name"] is True
    cfg_file = tmp_path / "r.toml"
    cfg_file.write_text('[source]\npath = "s3://dms-bucket"\n' + out.stdout)
    cfg = config.load(cfg_file, environ={})
    assert cfg.source.path == "s3://dms-bucket/sales"
    assert cfg.source.dms.timestamp_column_name == "dms_commit_ts"
    assert cfg.source.dms.compression_type == "GZIP"


def test_dms_settings_asks_which_endpoint_when_there_are_several(tmp_path: Path) -> None:
    two = {"Endpoints": [*ENDPOINTS["Endpoints"], {**ENDPOINTS["Endpoints"][1], "EndpointIdentifier": "b"}]}
    with pytest.raises(settings.SettingsError, match=r"2 S3 endpoints.*--endpoint"):
        settings.endpoint_section(json.dumps(two))
    assert "endpoint b" in settings.endpoint_section(json.dumps(two), "b")
    bare = settings.endpoint_section(json.dumps({"CsvNullValue": "", "Unheard": 1}))
    assert 'csv_null_value = ""' in bare and "Unheard" in bare.splitlines()[1]
    with pytest.raises(settings.SettingsError):
        settings.endpoint_section("[1, 2]")
