"""How the composition root opens a PostgreSQL source from ``[source.postgres]`` (``replicator.app`` finds
``open_source`` through its ``SOURCES`` registry)."""

from __future__ import annotations

from collections.abc import Mapping

from replicator.config import Config
from replicator.model import TableId, TableSchema
from replicator.schema import TableOptions
from replicator.sources.postgres.source import PostgresSource
from replicator.storage import ObjectStore, Quarantine


def open_source(
    cfg: Config,
    schemas: Mapping[TableId, TableSchema],
    *,
    state: ObjectStore,
    quarantine: Quarantine,
    options: Mapping[TableId, TableOptions],
) -> PostgresSource:
    """Logical replication from the database of ``[source.postgres]``; progress kept in ``state``."""
    pgc = cfg.source.postgres
    return PostgresSource(
        postgres_source_dsn(cfg),
        schemas,
        state=state,
        slot=pgc.slot_name,
        publication=pgc.publication_name,
        create_slot=pgc.create_slot,
        create_publication=pgc.create_publication,
        keyless={t: o.keyless for t, o in options.items()},
        copy_workers=pgc.copy_workers,
        chunk_rows=cfg.batch.max_rows,
        idle_seconds=cfg.batch.age / 2,
    )


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
