"""Composition root: the one place that picks concrete classes from the configuration.

``WAREHOUSES`` and ``SOURCES`` map a configuration ``kind`` to the module that opens it, imported only when
chosen (its driver loads with it). A new warehouse is one module in ``replicator/warehouses/`` with
``open_warehouse(cfg, *, read_only)``; a new source is one package in ``replicator/sources/`` that exports
``open_source(cfg, schemas, *, state, quarantine, options)``. Each is then one line here (and its ``kind``
and settings in ``config.py``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import signal
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from replicator.config import Config, ConfigError, resolve
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
from replicator.sources import ShardedSource, Source, shard_of, table_groups
from replicator.stage import Stager
from replicator.storage import ObjectStore, Quarantine, S3Settings, open_store
from replicator.warehouses import Warehouse

if TYPE_CHECKING:
    from replicator.views import ViewRefresher

log = structlog.get_logger(__name__)

# [warehouse] kind -> the module whose open_warehouse(cfg, *, read_only) opens it
WAREHOUSES = {
    "duckdb": "replicator.warehouses.duckdb",
    "postgres": "replicator.warehouses.postgres",
    "redshift": "replicator.warehouses.redshift",
}
# [source] kind -> the package whose open_source(cfg, schemas, *, state, quarantine, options) opens it
SOURCES = {
    "dms": "replicator.sources.dms",
    "postgres": "replicator.sources.postgres",
    "sqlserver": "replicator.sources.sqlserver",
}


def s3_settings(cfg: Config) -> S3Settings:
    s3 = cfg.s3
    return S3Settings(
        endpoint_url=s3.endpoint_url or None, region=s3.region or None, sse=s3.sse or None,
        sse_kms_key_id=s3.sse_kms_key_id or None, expected_bucket_owner=s3.expected_bucket_owner or None,
    )  # fmt: skip


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
    """The configured warehouse, open. ``read_only``: for status checks beside a running writer (DuckDB)."""
    module = importlib.import_module(WAREHOUSES[cfg.warehouse.kind])
    warehouse: Warehouse = module.open_warehouse(cfg, read_only=read_only)
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
    """The PostgreSQL warehouse's libpq DSN (the daemon's control session connects with it too). It holds
    the password: pass it to the driver, never to a log or an error message."""
    from replicator.warehouses import postgres_dsn as dsn

    return dsn(cfg)


def postgres_source_dsn(cfg: Config) -> str:
    """The PostgreSQL source's libpq DSN (holds the password: for the driver only)."""
    from replicator.sources.postgres import postgres_source_dsn as dsn

    return dsn(cfg)


def open_views(
    cfg: Config,
    schemas: dict[TableId, TableSchema],
    warehouse: Warehouse,
    *,
    every: Collection[TableId] | None = None,
) -> ViewRefresher | None:
    """The refresher of the views in ``<schemas>/views/*.sql``, beside ``tables/``; None if there are none.
    ``every``: all tables of the config when ``schemas`` is the share of one task: it keeps the views
    whose tables it owns (a view's tables are owned together, see ``replicator.sources.sharded``)."""
    folder = Path(resolve(cfg, cfg.schemas)) / "views"
    if not any(folder.glob("*.sql")):  # no views: the views package (SQL parser and all) is not even loaded
        return None
    from replicator.views import ViewCatalog, ViewError, ViewRefresher, load_views
    from replicator.warehouses import SqlWarehouse

    try:
        views = load_views(folder, set(every or schemas))
    except ViewError as exc:
        raise ConfigError(f"views: {exc}") from None
    if every is not None and set(every) != set(schemas):
        owned = {v.name for v in views.views if views.base_tables(v) <= set(schemas)}
        views = ViewCatalog(tuple(v for v in views.views if v.name in owned))
    if not views.views:
        return None
    if not isinstance(warehouse, SqlWarehouse):
        log.warning("views_not_supported", warehouse=warehouse.name, views=len(views.views))
        return None
    return ViewRefresher(views, warehouse)


def view_reads(cfg: Config, schemas: Collection[TableId]) -> list[frozenset[TableId]]:
    """The replicated tables each view reads (for grouping tables that one task must own together)."""
    from replicator.views import ViewError, load_views

    try:
        views = load_views(Path(resolve(cfg, cfg.schemas)) / "views", set(schemas))
    except ViewError as exc:
        raise ConfigError(f"views: {exc}") from None
    return [views.base_tables(v) for v in views.views]


def shards(cfg: Config, schemas: Collection[TableId]) -> dict[int, list[TableId]]:
    """The PostgreSQL source's shards (``source.postgres.shards``): shard number -> its tables, by group
    (``replicator.sources.sharded``), computed from every table of the config; shards without tables are
    left out."""
    n = cfg.source.postgres.shards if cfg.source.kind == "postgres" else 1
    groups = table_groups(schemas, view_reads(cfg, schemas)) if n > 1 else {t: "" for t in schemas}
    out: dict[int, list[TableId]] = {}
    for table in sorted(schemas):
        out.setdefault(shard_of(groups[table], n), []).append(table)
    return out


def shard_config(cfg: Config, shard: int) -> Config:
    """``cfg`` with the slot and publication of ``shard`` (unchanged with a single shard)."""
    pgc = cfg.source.postgres
    if pgc.shards <= 1:
        return cfg
    named = dataclasses.replace(
        pgc, slot_name=f"{pgc.slot_name}_{shard}", publication_name=f"{pgc.publication_name}_{shard}"
    )
    return dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, postgres=named))


def open_source(
    cfg: Config,
    schemas: dict[TableId, TableSchema],
    staging: ObjectStore,
    quarantine: Quarantine,
    options: dict[TableId, TableOptions] | None = None,
    *,
    all_tables: Collection[TableId] | None = None,
) -> Source:
    """The configured source; its progress lives in the staging store (``_state/``). With PostgreSQL
    shards, one source per shard that has tables in ``schemas`` (``all_tables``: every table of the config,
    which decides the shards), read as one."""
    package = importlib.import_module(SOURCES[cfg.source.kind])
    opts = table_options(cfg) if options is None else options
    if cfg.source.kind == "postgres" and cfg.source.postgres.shards > 1:
        parts = []
        for k, tables in shards(cfg, all_tables if all_tables is not None else schemas).items():
            mine = {t: schemas[t] for t in tables if t in schemas}
            if mine:
                parts.append(
                    package.open_source(shard_config(cfg, k), mine, state=staging, quarantine=quarantine,
                                        options=opts)
                )  # fmt: skip
        return ShardedSource(parts)
    source: Source = package.open_source(cfg, schemas, state=staging, quarantine=quarantine, options=opts)
    elsewhere = set(all_tables or ()) - set(schemas)
    owned_elsewhere = getattr(source, "owned_elsewhere", None)  # DMS: folders of other tasks' tables
    if elsewhere and owned_elsewhere is not None:
        owned_elsewhere(elsewhere)
    return source


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
def build(
    cfg: Config, *, warehouse: Warehouse | None = None, tables: Collection[TableId] | None = None
) -> Iterator[App]:
    """Everything wired; ``warehouse``: one already open (the daemon opens it first to take the lease). It is
    closed with the app either way. ``tables``: only these (the ones this task owns; default: all)."""
    every = load_schemas(cfg)
    schemas = every if tables is None else {t: s for t, s in every.items() if t in tables}
    staging = open_staging(cfg)
    quarantine = Quarantine(staging)
    options = table_options(cfg)
    source = open_source(cfg, schemas, staging, quarantine, options, all_tables=set(every))
    if warehouse is None:
        warehouse = open_warehouse(cfg)
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
        views=open_views(cfg, schemas, warehouse, every=set(every)),
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
