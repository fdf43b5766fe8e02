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

import structlog

from replicator import catalog
from replicator.config import Config, ConfigError, DmsConfig, resolve
from replicator.model import TableId, TableSchema
from replicator.pipeline import Pipeline
from replicator.quarantine import Quarantine
from replicator.sources.base import Source
from replicator.stage import Stager
from replicator.store import ObjectStore, S3Settings, open_store
from replicator.warehouses.base import Warehouse

log = structlog.get_logger(__name__)


def s3_settings(cfg: Config) -> S3Settings:
    return S3Settings(endpoint_url=cfg.s3.endpoint_url or None, region=cfg.s3.region or None)


def load_schemas(cfg: Config) -> dict[TableId, TableSchema]:
    folder = Path(resolve(cfg, cfg.schemas))
    try:
        schemas = catalog.load_tables(folder)
    except catalog.CatalogError as exc:
        raise ConfigError(f"schemas: {exc}") from None
    if not schemas:
        raise ConfigError(f"schemas: no table definitions (*.toml) found in {folder}")
    return schemas


def open_staging(cfg: Config) -> ObjectStore:
    return open_store(resolve(cfg, cfg.staging.path), s3_settings(cfg))


def open_warehouse(cfg: Config, *, read_only: bool = False) -> Warehouse:
    wh = cfg.warehouse
    if wh.kind == "duckdb":
        from replicator.warehouses.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(resolve(cfg, wh.path), read_only=read_only)
    from replicator.warehouses.postgres import PostgresWarehouse

    return PostgresWarehouse(postgres_dsn(cfg))


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


def open_source(
    cfg: Config, schemas: dict[TableId, TableSchema], staging: ObjectStore, quarantine: Quarantine
) -> Source:
    from replicator.sources.dms import DmsOptions, DmsSource

    d: DmsConfig = cfg.source.dms
    options = DmsOptions(
        include_op_for_full_load=d.include_op_for_full_load,
        timestamp_column_name=d.timestamp_column_name or None,
        csv_null_value=d.csv_null_value,
        add_column_name=d.add_column_name,
    )
    store = open_store(resolve(cfg, cfg.source.path), s3_settings(cfg))
    return DmsSource(store, schemas, state=staging, quarantine=quarantine, options=options)


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
def build(cfg: Config) -> Iterator[App]:
    schemas = load_schemas(cfg)
    staging = open_staging(cfg)
    quarantine = Quarantine(staging)
    source = open_source(cfg, schemas, staging, quarantine)
    warehouse = open_warehouse(cfg)
    pipeline = Pipeline(
        source=source,
        stager=Stager(staging, quarantine),
        warehouse=warehouse,
        schemas=schemas,
        batch=cfg.batch,
        settings=cfg.pipeline,
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
