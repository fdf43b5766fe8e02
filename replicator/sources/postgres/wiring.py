"""How the composition root opens a PostgreSQL source from ``[source.postgres]`` (``replicator.app`` finds
``open_source`` through its ``SOURCES`` registry)."""

from __future__ import annotations

from collections.abc import Mapping

from replicator.config import Config
from replicator.model import TableId, TableSchema
from replicator.schema import TableOptions
from replicator.sources.postgres.setup import (
    SourceSetupError,
    ensure_publication,
    preflight,
    slot_exists,
    slot_invalidated,
)
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


def check_source(cfg: Config, schemas: Mapping[TableId, TableSchema]) -> str:
    """``replicator check``: what start-up checks (wal_level, privileges, the tables, their keys, the
    publication, the slot), creating nothing; raises ``SourceSetupError`` with the fix. What the first run
    will create (``create_publication``, ``create_slot``) is said, not failed."""
    import psycopg2

    pgc = cfg.source.postgres
    conn = psycopg2.connect(postgres_source_dsn(cfg))
    try:
        conn.autocommit = True
        checks = preflight(conn, list(schemas.values()))
        notes = [f"{len(checks)} tables ok"]
        insert_only = [str(c.table) for c in checks if c.insert_only]
        if insert_only:
            notes.append(f"insert only (no replica identity): {', '.join(insert_only)}")
        try:
            ensure_publication(conn, pgc.publication_name, list(schemas), create=False)
            notes.append(f"publication {pgc.publication_name} ok")
        except SourceSetupError as exc:
            if not pgc.create_publication:
                raise
            notes.append(f"{exc}; the first run does it (create_publication)")
        lost = slot_invalidated(conn, pgc.slot_name)
        if lost is not None:
            if not pgc.create_slot:
                raise SourceSetupError(f"slot {pgc.slot_name!r} is lost ({lost}) and create_slot is off")
            notes.append(
                f"slot {pgc.slot_name} is LOST ({lost}): the next run replaces it and copies every table"
            )
        elif slot_exists(conn, pgc.slot_name):
            notes.append(f"slot {pgc.slot_name} exists")
        elif pgc.create_slot:
            notes.append(f"slot {pgc.slot_name} is created by the first run")
        else:
            raise SourceSetupError(f"slot {pgc.slot_name!r} does not exist and create_slot is off")
    finally:
        conn.close()
    return f"{pgc.host}:{pgc.port}/{pgc.database}: " + "; ".join(notes)
