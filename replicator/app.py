"""Composition root: the one place that picks concrete classes from the configuration."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from replicator.config import Config, ConfigError, DmsConfig, resolve
from replicator.model import TableId, TableSchema
from replicator.pipeline import Pipeline
from replicator.schema import (
    CatalogError,
    ColumnPolicies,
    PolicyError,
    TableOptions,
    load_options,
    load_tables,
)
from replicator.sources import Source
from replicator.stage import Stager
from replicator.storage import ObjectStore, Quarantine, S3Settings, open_store
from replicator.warehouses import Warehouse

if TYPE_CHECKING:
    from replicator.sources.dms import DmsOptions
    from replicator.views import ViewRefresher

log = structlog.get_logger(__name__)


def s3_settings(cfg: Config) -> S3Settings:
    return S3Settings(endpoint_url=cfg.s3.endpoint_url or None, region=cfg.s3.region or None)


def load_schemas(cfg: Config) -> dict[TableId, TableSchema]:
    folder = Path(resolve(cfg, cfg.schemas))
    try:
        schemas = load_tables(folder)
    except CatalogError as exc:
        raise ConfigError(f"schemas: {exc}") from None
    if not schemas:
        raise ConfigError(f"schemas: no table definitions (*.toml) found in {folder}")
    return schemas


def open_staging(cfg: Config) -> ObjectStore:
    return open_store(resolve(cfg, cfg.staging.path), s3_settings(cfg))


def open_warehouse(cfg: Config, *, read_only: bool = False) -> Warehouse:
    wh = cfg.warehouse
    if wh.kind == "duckdb":
        from replicator.warehouses import DuckDBWarehouse

        return DuckDBWarehouse(resolve(cfg, wh.path), read_only=read_only)
    if wh.kind == "redshift":
        return open_redshift(cfg)
    from replicator.warehouses import PostgresWarehouse

    return PostgresWarehouse(postgres_dsn(cfg))


def open_redshift(cfg: Config) -> Warehouse:
    """Redshift with password or IAM auth; the schemas' per-table options (layout, deletes) applied."""
    import redshift_connector

    from replicator.warehouses import RedshiftAuth, RedshiftWarehouse, connect_kwargs

    wh = cfg.warehouse
    auth = RedshiftAuth(
        host=wh.host,
        port=wh.port,
        database=wh.database,
        user=wh.user,
        password=wh.password.reveal() if wh.password is not None else None,
        iam=wh.auth == "iam",
        cluster_identifier=wh.cluster_identifier,
        workgroup=wh.workgroup,
        region=wh.region or cfg.s3.region,
        ssl=wh.sslmode != "disable",
        timeout_seconds=wh.connect_timeout_seconds,
    )
    kwargs = connect_kwargs(auth)
    warehouse = RedshiftWarehouse(
        lambda: redshift_connector.connect(**kwargs),
        staging_url=cfg.staging.path,
        iam_role=wh.iam_role,
        region=wh.region or cfg.s3.region,
    )
    return warehouse


def table_options(cfg: Config) -> dict[TableId, TableOptions]:
    """Per-table options (deletes, dropped columns, policies, Redshift layout) from schemas/."""
    try:
        return load_options(Path(resolve(cfg, cfg.schemas)))
    except CatalogError as exc:
        raise ConfigError(f"schemas: {exc}") from None


def column_policies(
    cfg: Config, schemas: dict[TableId, TableSchema], options: dict[TableId, TableOptions]
) -> dict[TableId, ColumnPolicies]:
    """The column policies of each table, with the HMAC key; refuses ones that cannot apply."""
    key = cfg.policies.hmac_key.reveal().encode() if cfg.policies.hmac_key is not None else None
    out = {}
    for table, opts in options.items():
        if opts.policies:
            policies = ColumnPolicies(dict(opts.policies), key)
            try:
                policies.check(schemas[table])
            except PolicyError as exc:
                raise ConfigError(f"schemas: {exc}") from None
            out[table] = policies
    return out


def postgres_dsn(cfg: Config) -> str:
    """A libpq DSN. It holds the password: pass it to the driver, never to a log or an error message."""
    from psycopg2.extensions import make_dsn

    wh = cfg.warehouse
    params: dict[str, str] = {
        "host": wh.host,
        "port": str(wh.port),
        "dbname": wh.database,
        "user": wh.user,
        "sslmode": wh.sslmode,
        "connect_timeout": str(wh.connect_timeout_seconds),
        "application_name": "replicator",
    }
    if wh.sslrootcert:
        params["sslrootcert"] = wh.sslrootcert
    if wh.password is not None:
        params["password"] = wh.password.reveal()
    return make_dsn(**params)


def postgres_source_dsn(cfg: Config) -> str:
    """libpq DSN of the PostgreSQL source; holds the password: for the driver only, never a log."""
    from psycopg2.extensions import make_dsn

    src = cfg.source.postgres
    params: dict[str, str] = {
        "host": src.host,
        "port": str(src.port),
        "dbname": src.database,
        "user": src.user,
        "sslmode": src.sslmode,
        "application_name": "replicator",
    }
    if src.sslrootcert:
        params["sslrootcert"] = src.sslrootcert
    if src.password is not None:
        params["password"] = src.password.reveal()
    return make_dsn(**params)


def open_views(
    cfg: Config, schemas: dict[TableId, TableSchema], warehouse: Warehouse
) -> ViewRefresher | None:
    """The refresher of the views in ``<schemas>/views/*.sql``, beside ``tables/``; None if there are none."""
    from replicator.views import ViewError, ViewRefresher, load_views
    from replicator.warehouses import SqlWarehouse

    try:
        views = load_views(Path(resolve(cfg, cfg.schemas)) / "views", set(schemas))
    except ViewError as exc:
        raise ConfigError(f"views: {exc}") from None
    if not views.views:
        return None
    if not isinstance(warehouse, SqlWarehouse):
        log.warning("views_not_supported", warehouse=warehouse.name, views=len(views.views))
        return None
    return ViewRefresher(views, warehouse)


def open_source(
    cfg: Config, schemas: dict[TableId, TableSchema], staging: ObjectStore, quarantine: Quarantine
) -> Source:
    if cfg.source.kind == "sqlserver":
        return open_sqlserver_source(cfg, schemas, staging)
    if cfg.source.kind == "postgres":
        from replicator.sources.postgres import PostgresSource

        pgc = cfg.source.postgres
        return PostgresSource(
            postgres_source_dsn(cfg),
            schemas,
            state=staging,
            slot=pgc.slot_name,
            publication=pgc.publication_name,
            create_slot=pgc.create_slot,
            create_publication=pgc.create_publication,
            keyless={t: o.keyless for t, o in table_options(cfg).items()},
            copy_workers=pgc.copy_workers,
            chunk_rows=cfg.batch.max_rows,
            idle_seconds=cfg.batch.age / 2,
        )
    from replicator.sources.dms import DmsSource

    d: DmsConfig = cfg.source.dms
    options = dms_options(d)
    store = open_store(resolve(cfg, cfg.source.path), s3_settings(cfg))
    return DmsSource(store, schemas, state=staging, quarantine=quarantine, options=options)


def dms_options(d: DmsConfig) -> DmsOptions:
    """The DMS endpoint settings from the config, as the source takes them."""
    from replicator.sources.dms import DmsOptions
    from replicator.sources.dms.settings import log_ignored

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


def open_sqlserver_source(cfg: Config, schemas: dict[TableId, TableSchema], staging: ObjectStore) -> Source:
    """The SQL Server CDC source; its progress lives in the staging store under ``_state/sqlserver/``."""
    import pymssql

    from replicator.sources.sqlserver import SqlServerOptions, SqlServerSource

    c = cfg.source.sqlserver
    instances: dict[TableId, str] = {}
    for item in filter(None, (p.strip() for p in c.capture_instances.split(","))):
        table, eq, instance = item.partition("=")
        if not eq or not instance.strip():
            raise ConfigError(
                f"source.sqlserver.capture_instances: {item!r} is not schema.table=capture_instance"
            )
        try:
            instances[TableId.parse(table.strip())] = instance.strip()
        except ValueError as exc:
            raise ConfigError(f"source.sqlserver.capture_instances: {exc}") from None

    def connect() -> Any:
        # The password goes to the driver only, never to a log or an error message.
        return pymssql.connect(
            server=c.host, port=str(c.port), user=c.user, database=c.database,
            password=c.password.reveal() if c.password is not None else "",
            login_timeout=c.login_timeout_seconds, autocommit=True, appname="replicator",
        )  # fmt: skip

    options = SqlServerOptions(
        net_changes=c.net_changes, page_rows=c.page_rows, poll_interval_seconds=c.poll_interval_seconds,
        max_poll_interval_seconds=c.max_poll_interval_seconds, capture_instances=instances,
        check_capture_job=c.check_capture_job, server_time_zone=c.server_time_zone,
        initial_load=c.initial_load,
    )  # fmt: skip
    return SqlServerSource(connect, schemas, state=staging, options=options)


@dataclass
class App:
    cfg: Config
    schemas: dict[TableId, TableSchema]
    staging: ObjectStore
    quarantine: Quarantine
    source: Source
    warehouse: Warehouse
    pipeline: Pipeline

    def close(self) -> None:
        self.source.close()
        self.warehouse.close()


@contextmanager
def build(cfg: Config, *, warehouse: Warehouse | None = None) -> Iterator[App]:
    """Everything wired; ``warehouse``: one already open (the daemon opens it first to take the lease). It is
    closed with the app either way."""
    schemas = load_schemas(cfg)
    staging = open_staging(cfg)
    quarantine = Quarantine(staging)
    source = open_source(cfg, schemas, staging, quarantine)
    if warehouse is None:
        warehouse = open_warehouse(cfg)
    options = table_options(cfg)
    configure = getattr(warehouse, "configure", None)
    if configure is not None:  # SQL warehouses: soft deletes, dropped columns, policies' shape, layout
        configure(options)
    pipeline = Pipeline(
        source=source,
        stager=Stager(staging, quarantine, column_policies(cfg, schemas, options)),
        warehouse=warehouse,
        schemas=schemas,
        batch=cfg.batch,
        settings=cfg.pipeline,
        views=open_views(cfg, schemas, warehouse),
    )
    app = App(cfg, schemas, staging, quarantine, source, warehouse, pipeline)
    try:
        yield app
    finally:
        app.close()


def install_signal_handlers(stop: threading.Event, grace_seconds: float) -> None:
    """SIGTERM/SIGINT ask the loop to stop after its current step. If that takes longer than the grace
    period, the process exits anyway: every durable step is transactional or idempotent, so abandoning
    in-flight work is safe (the same as a crash), and exiting before ECS's SIGKILL keeps the exit clean."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            return
        log.info("shutdown_requested", signal=signal.Signals(signum).name, grace_seconds=grace_seconds)
        stop.set()
        timer = threading.Timer(grace_seconds, _abandon, args=(grace_seconds,))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _abandon(grace_seconds: float) -> None:
    log.warning("shutdown_grace_expired", grace_seconds=grace_seconds, detail="abandoning in-flight work")
    os._exit(0)
