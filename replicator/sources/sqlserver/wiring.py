"""How the composition root opens a SQL Server source from ``[source.sqlserver]`` (``replicator.app`` finds
``open_source`` through its ``SOURCES`` registry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from replicator.config import Config, ConfigError
from replicator.model import TableId, TableSchema
from replicator.schema import TableOptions
from replicator.sources.sqlserver.source import SqlServerOptions, SqlServerSource
from replicator.storage import ObjectStore, Quarantine


def open_source(
    cfg: Config,
    schemas: Mapping[TableId, TableSchema],
    *,
    state: ObjectStore,
    quarantine: Quarantine,
    options: Mapping[TableId, TableOptions],
) -> SqlServerSource:
    """The SQL Server CDC source; its progress lives in the state store under ``_state/sqlserver/``."""
    import pymssql

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

    sql_options = SqlServerOptions(
        net_changes=c.net_changes, page_rows=c.page_rows, poll_interval_seconds=c.poll_interval_seconds,
        max_poll_interval_seconds=c.max_poll_interval_seconds, capture_instances=instances,
        check_capture_job=c.check_capture_job, server_time_zone=c.server_time_zone,
        initial_load=c.initial_load,
    )  # fmt: skip
    return SqlServerSource(connect, schemas, state=state, options=sql_options)
