"""How the composition root opens a DMS source from ``[source]`` and ``[source.dms]`` (``replicator.app``
finds ``open_source`` through its ``SOURCES`` registry)."""

from __future__ import annotations

from collections.abc import Mapping

from replicator.config import Config, ConfigError, DmsConfig, resolve
from replicator.model import TableId, TableSchema
from replicator.schema import TableOptions
from replicator.sources.dms.layout import DmsOptions
from replicator.sources.dms.settings import log_ignored
from replicator.sources.dms.source import DmsSource
from replicator.storage import ObjectStore, Quarantine, open_store


def open_source(
    cfg: Config,
    schemas: Mapping[TableId, TableSchema],
    *,
    state: ObjectStore,
    quarantine: Quarantine,
    options: Mapping[TableId, TableOptions],
) -> DmsSource:
    """The DMS files at ``source.path`` (S3 or a local folder), read with the endpoint settings given."""
    # The same S3 settings as staging, and the column policies the stage applies (app imports this lazily):
    # a bad row is quarantined with them applied, never in clear.
    from replicator.app import column_policies, s3_settings

    store = open_store(resolve(cfg, cfg.source.path), s3_settings(cfg))
    policies = column_policies(cfg, dict(schemas), dict(options))
    options_ = dms_options(cfg.source.dms)
    return DmsSource(store, schemas, state=state, quarantine=quarantine, options=options_, policies=policies)


def dms_options(d: DmsConfig) -> DmsOptions:
    """The DMS endpoint settings from the config, as the source takes them."""
    log_ignored(d)
    policies: dict[TableId, str] = {}
    for item in filter(None, (p.strip() for p in d.bad_input_policy_tables.split(","))):
        name, _, policy = item.partition("=")
        if policy not in ("stop", "quarantine"):
            raise ConfigError(
                f"source.dms.bad_input_policy_tables: {item!r} is not schema.table=stop|quarantine"
            )
        policies[TableId.parse(name.strip())] = policy
    try:
        return DmsOptions(
            include_op_for_full_load=d.include_op_for_full_load,
            timestamp_column_name=d.timestamp_column_name or None,
            csv_null_value=d.csv_null_value,
            add_column_name=d.add_column_name,
            data_format=d.data_format,
            compression_type="gzip" if d.compression_type.lower() == "gzip" else "none",
            csv_delimiter=d.csv_delimiter,
            csv_row_delimiter=d.csv_row_delimiter,
            rfc_4180=d.rfc_4180,
            cdc_inserts_only=d.cdc_inserts_only,
            cdc_inserts_and_updates=d.cdc_inserts_and_updates,
            use_csv_no_sup_value=d.use_csv_no_sup_value,
            csv_no_sup_value=d.csv_no_sup_value,
            date_partition_enabled=d.date_partition_enabled,
            date_partition_sequence=d.date_partition_sequence,
            date_partition_delimiter=d.date_partition_delimiter,
            preserve_transactions=d.preserve_transactions,
            cdc_path=d.cdc_path,
            bad_input_policy=d.bad_input_policy,
            table_policies=policies,  # type: ignore[arg-type]
            sqs_queue_url=d.sqs_queue_url,
        )
    except ValueError as exc:
        raise ConfigError(f"source.dms: {exc}") from None
