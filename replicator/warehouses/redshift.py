"""Amazon Redshift (provisioned or Serverless) through ``redshift_connector``.

The apply algorithm is ``SqlWarehouse``'s; this module adds what only Redshift needs:

- staging is loaded by ``COPY ... FROM 's3://<staging>/<data_key>' IAM_ROLE ... FORMAT AS PARQUET``
  straight from the staging store (the local file the pipeline passes is read for the batch's layout
  only); a ``loader`` can replace that one step (tests load the same rows over the connection instead);
- an apply that fails with ``1023 serializable isolation violation`` (another writer committed first) was
  rolled back whole, so it is retried after a backoff with jitter;
- DISTSTYLE/DISTKEY/SORTKEY and column encodings come from ``[redshift]`` in the table's TOML.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from replicator.model import Manifest, TableSchema
from replicator.schema.catalog import TableOptions
from replicator.warehouses.base import ApplyResult
from replicator.warehouses.dialect import Dialect
from replicator.warehouses.redshift_sql import REDSHIFT, copy_parquet, layout
from replicator.warehouses.sql_base import SqlWarehouse

log = structlog.get_logger(__name__)

# (warehouse, schema, staging table, staged file, moves: the file has ``_from_seq``) -> None
Loader = Callable[["RedshiftWarehouse", TableSchema, str, Path, bool], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    base_seconds: float = 0.5
    max_seconds: float = 30.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)], so colliding writers spread out."""
        return random.uniform(0, min(self.max_seconds, self.base_seconds * 2**attempt))  # noqa: S311


def is_serialization_conflict(exc: BaseException) -> bool:
    """Redshift's ``ERROR: 1023 ... Serializable isolation violation`` (or PostgreSQL's 40001 twin)."""
    text = str(exc).lower()
    return ("1023" in text and "serializable isolation violation" in text) or "'c': '40001'" in text


@dataclass(frozen=True, slots=True)
class RedshiftAuth:
    """How to reach the cluster. Password auth, or IAM (temporary credentials from the task role):
    provisioned clusters by ``cluster_identifier``, Serverless by ``workgroup``."""

    host: str = ""
    port: int = 5439
    database: str = "dev"
    user: str = ""
    password: str | None = None  # password auth only; never logged
    iam: bool = False
    cluster_identifier: str = ""
    workgroup: str = ""
    region: str = ""
    ssl: bool = True
    timeout_seconds: int = 10

    def __repr__(self) -> str:
        where = f"host={self.host!r}, database={self.database!r}"
        return f"RedshiftAuth({where}, user={self.user!r}, iam={self.iam})"


def connect_kwargs(auth: RedshiftAuth) -> dict[str, Any]:
    """Keyword arguments of ``redshift_connector.connect`` for ``auth`` (holds the password: never log)."""
    kw: dict[str, Any] = {
        "database": auth.database,
        "port": auth.port,
        "ssl": auth.ssl,
        "timeout": auth.timeout_seconds,
        "application_name": "replicator",
    }
    if auth.host:
        kw["host"] = auth.host
    if not auth.iam:
        if auth.password is None:
            raise ValueError("Redshift password auth needs a password (REPLICATOR__WAREHOUSE__PASSWORD)")
        return {**kw, "user": auth.user, "password": auth.password}
    kw.update(iam=True, region=auth.region or None, db_user=auth.user or None)
    if auth.workgroup:
        kw.update(is_serverless=True, serverless_work_group=auth.workgroup)
    elif auth.cluster_identifier:
        kw["cluster_identifier"] = auth.cluster_identifier
    else:
        raise ValueError("Redshift IAM auth needs cluster_identifier (provisioned) or workgroup (Serverless)")
    return {k: v for k, v in kw.items() if v is not None}


class RedshiftWarehouse(SqlWarehouse):
    """``Warehouse`` on Redshift. ``connect`` returns a DB-API connection (``redshift_connector``)."""

    name = "redshift"

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        staging_url: str,
        iam_role: str,
        region: str = "",
        dialect: Dialect = REDSHIFT,
        loader: Loader | None = None,
        retry: RetryPolicy | None = None,
        physical_layout: bool = True,
    ) -> None:
        self.dialect = dialect
        self._conn = connect()
        self._conn.autocommit = True  # transactions are explicit (BEGIN), so ALTER ... TYPE can run alone
        self._staging_url = staging_url.rstrip("/")
        self._iam_role = iam_role
        self._region = region
        self._loader = loader
        self._retry = retry or RetryPolicy()
        self._physical_layout = physical_layout
        self._manifest: Manifest | None = None

    def _execute(self, sql: str) -> None:
        cur = self._conn.cursor()
        try:
            cur.execute(sql)
        finally:
            cur.close()

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        cur = self._conn.cursor()
        try:
            cur.execute(sql)
            return [tuple(r) for r in (cur.fetchall() or ())]
        finally:
            cur.close()

    def _load(self, schema: TableSchema, staging: str, parquet: Path, *, moves: bool) -> None:
        if self._loader is not None:
            self._loader(self, schema, staging, parquet, moves)
            return
        assert self._manifest is not None, "_load runs inside apply"
        url = f"{self._staging_url}/{self._manifest.data_key}"
        self._execute(copy_parquet(staging, url, self._iam_role, region=self._region))

    def _layout(self, schema: TableSchema, options: TableOptions) -> dict[str, Any]:
        if not self._physical_layout:
            return {}
        encodings, suffix = layout(schema.columns, options.redshift)
        return {"column_suffix": encodings, "table_suffix": suffix}

    def apply(self, manifest: Manifest, schema: TableSchema, parquet: Path) -> ApplyResult:
        """``SqlWarehouse.apply``, retried while Redshift reports a serializable isolation violation."""
        attempt = 0
        while True:
            attempt += 1
            self._manifest = manifest
            try:
                return super().apply(manifest, schema, parquet)
            except Exception as exc:
                if not is_serialization_conflict(exc) or attempt >= self._retry.attempts:
                    raise
                delay = self._retry.delay(attempt)
                log.warning(
                    "serialization_conflict_retry",
                    table=str(manifest.table),
                    batch_id=manifest.batch_id,
                    attempt=attempt,
                    delay_seconds=round(delay, 3),
                )
                time.sleep(delay)
            finally:
                self._manifest = None

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        """Run one statement with DB-API parameters (test loaders)."""
        cur = self._conn.cursor()
        try:
            cur.execute(sql, params)
        finally:
            cur.close()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only query (tests, admin tooling)."""
        return self._query(sql)

    def close(self) -> None:
        self._conn.close()
