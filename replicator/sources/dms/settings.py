"""The DMS S3 endpoint settings, as AWS names them, and what the reader makes of each.

``[source.dms]`` takes every ``S3Settings`` name of the DMS API in snake case (``CdcInsertsOnly`` ->
``cdc_inserts_only``). Some change how the files must be read (delimiters, null marker, Op column, date
folders ...); the others change only how DMS writes or stores them (Parquet page sizes, statistics,
encryption, ACLs, flush interval ...): those are accepted, ignored, and named once in the log.

``endpoint_section`` turns what ``aws dms describe-endpoints`` prints into that section, so that a user can
paste the endpoint's settings instead of retyping them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from replicator.config import ConfigError, DmsConfig

log = structlog.get_logger(__name__)

# The S3Settings members of the DMS API (2016-01-01), as DescribeEndpoints returns them.
S3_SETTINGS = (
    "AddColumnName", "AddTrailingPaddingCharacter", "BucketFolder", "BucketName", "CannedAclForObjects",
    "CdcInsertsAndUpdates", "CdcInsertsOnly", "CdcMaxBatchInterval", "CdcMinFileSize", "CdcPath",
    "CompressionType", "CsvDelimiter", "CsvNoSupValue", "CsvNullValue", "CsvRowDelimiter", "DataFormat",
    "DataPageSize", "DatePartitionDelimiter", "DatePartitionEnabled", "DatePartitionSequence",
    "DatePartitionTimezone", "DictPageSizeLimit", "EnableStatistics", "EncodingType", "EncryptionMode",
    "ExpectedBucketOwner", "ExternalTableDefinition", "GlueCatalogGeneration", "IgnoreHeaderRows",
    "IncludeOpForFullLoad", "MaxFileSize", "ParquetTimestampInMillisecond", "ParquetVersion",
    "PreserveTransactions", "Rfc4180", "RowGroupLength", "ServerSideEncryptionKmsKeyId",
    "ServiceAccessRoleArn", "TimestampColumnName", "UseCsvNoSupValue", "UseTaskStartTimeForFullLoadTimestamp",
)  # fmt: skip

# Settings that do not change what a reader of the files sees, with the reason.
IGNORED = {
    "add_trailing_padding_character": "padding is part of the values as written",
    "bucket_name": "source.path names the bucket",
    "canned_acl_for_objects": "object ACLs",
    "cdc_max_batch_interval": "when DMS writes a file",
    "cdc_min_file_size": "when DMS writes a file",
    "data_page_size": "Parquet layout",
    "date_partition_timezone": "date folders are read in name order whatever their zone",
    "dict_page_size_limit": "Parquet layout",
    "enable_statistics": "Parquet statistics",
    "encoding_type": "Parquet encoding",
    "encryption_mode": "S3 decrypts on read",
    "expected_bucket_owner": "an S3 write check",
    "external_table_definition": "S3 as a DMS source only",
    "glue_catalog_generation": "a Glue catalog beside the files",
    "ignore_header_rows": "S3 as a DMS source only",
    "max_file_size": "full-load file size",
    "parquet_timestamp_in_millisecond": "Parquet files carry their timestamp unit",
    "parquet_version": "both Parquet versions are read alike",
    "row_group_length": "Parquet layout",
    "server_side_encryption_kms_key_id": "S3 decrypts on read",
    "service_access_role_arn": "the role DMS writes with",
    "use_task_start_time_for_full_load_timestamp": "only changes the full-load timestamp values",
}

# DMS prints control characters of the CSV settings escaped ("\\n").
_ESCAPES = {"\\n": "\n", "\\r": "\r", "\\t": "\t", "\\r\\n": "\r\n"}
_logged: set[tuple[str, ...]] = set()


def snake(name: str) -> str:
    """``CdcInsertsOnly`` -> ``cdc_inserts_only``; ``Rfc4180`` -> ``rfc4180`` (as the AWS SDKs spell them)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def ignored(d: DmsConfig) -> list[str]:
    """The settings of ``d`` that are set but do not change how files are read."""
    return [name for name in IGNORED if getattr(d, name) not in (None, "")]


def log_ignored(d: DmsConfig) -> None:
    """Say once per process which settings are accepted but ignored, and why."""
    names = tuple(ignored(d))
    if names and names not in _logged:
        _logged.add(names)
        log.info("dms_settings_ignored", settings={n: IGNORED[n] for n in names})


class SettingsError(ValueError):
    """The JSON given to ``dms-settings`` is not an endpoint description."""


def endpoint_section(text: str, endpoint: str | None = None) -> str:
    """The ``[source.dms]`` TOML section (and a ``[source]`` path) for an S3 target endpoint.

    ``text`` is what ``aws dms describe-endpoints`` prints (``{"Endpoints": [...]}``), one endpoint of it, or
    its ``S3Settings`` object alone. With several S3 endpoints, ``endpoint`` (its identifier) picks one.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"not JSON: {exc}") from None
    name, settings = _pick(doc, endpoint)
    known = {snake(n): n for n in S3_SETTINGS}
    fields = set(DmsConfig.__dataclass_fields__)
    lines, unknown = [], []
    for key, value in settings.items():
        field = snake(key)
        if field not in known or field not in fields:
            unknown.append(key)
            continue
        text = value
        if isinstance(value, str) and field in ("csv_delimiter", "csv_row_delimiter"):
            text = _ESCAPES.get(value, value)
        note = f"  # ignored: {IGNORED[field]}" if field in IGNORED else ""
        lines.append(f"{field} = {_toml(text)}{note}")
    head = [f"# From {name}: `aws dms describe-endpoints` S3Settings, written by `replicator dms-settings`."]
    bucket = settings.get("BucketName")
    if bucket:
        head.append(f'# [source] path = "s3://{bucket}" (bucket_folder below is joined to it)')
    if unknown:
        head.append(f"# not S3Settings this version knows, left out: {', '.join(sorted(unknown))}")
    return "\n".join([*head, "[source.dms]", *lines]) + "\n"


def print_section(path: Path, endpoint: str | None) -> int:
    """``replicator dms-settings FILE``: print the section; a file that is not an endpoint is exit 2."""
    try:
        text = path.read_text(encoding="utf-8")
        section = endpoint_section(text, endpoint)
    except (OSError, UnicodeDecodeError, SettingsError) as exc:
        raise ConfigError(f"dms-settings {path}: {exc}") from None
    print(section, end="")
    return 0


def _pick(doc: Any, endpoint: str | None) -> tuple[str, Mapping[str, Any]]:
    if isinstance(doc, Mapping) and isinstance(doc.get("Endpoints"), list):
        candidates = [e for e in doc["Endpoints"] if isinstance(e, Mapping) and "S3Settings" in e]
        if endpoint is not None:
            candidates = [
                e for e in candidates if endpoint in (e.get("EndpointIdentifier"), e.get("EndpointArn"))
            ]
        if len(candidates) != 1:
            names = [str(e.get("EndpointIdentifier")) for e in doc["Endpoints"] if isinstance(e, Mapping)]
            which = "no S3 endpoint" if not candidates else f"{len(candidates)} S3 endpoints"
            raise SettingsError(
                f"{which} to choose from (endpoints: {', '.join(names) or 'none'}); use --endpoint"
            )
        doc = candidates[0]
    if isinstance(doc, Mapping) and isinstance(doc.get("S3Settings"), Mapping):
        return f"endpoint {doc.get('EndpointIdentifier', '?')}", doc["S3Settings"]
    if isinstance(doc, Mapping) and any(k in S3_SETTINGS for k in doc):
        return "S3Settings", doc
    raise SettingsError("expected `aws dms describe-endpoints` output, an endpoint, or its S3Settings")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
