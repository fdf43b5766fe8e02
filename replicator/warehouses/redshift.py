"""Amazon Redshift (provisioned or Serverless) through ``redshift_connector``.

The apply algorithm is ``SqlWarehouse``'s; this module adds what only Redshift needs:

- staging is loaded by ``COPY ... FROM 's3://<staging>/<data_key>' IAM_ROLE ... FORMAT AS PARQUET``
  straight from the staging store (the local file the pipeline passes is read for the batch's layout
  only); a ``loader`` can replace that one step (tests load the same rows over the connection instead);
- an apply that fails with ``1023 serializable isolation violation`` (another writer committed first) was
  rolled back whole, so it is retried after a backoff with jitter;
- DISTSTYLE/DISTKEY/SORTKEY and column encodings come from ``[redshift]`` in the table's TOML.

The first half is the dialect (``REDSHIFT``), its COPY statement and table layout: pure builders, nothing
connects (tests parse their SQL). What shapes that SQL (see DESIGN.md "Targets"):

- MERGE takes one unconditional ``WHEN MATCHED`` and one ``WHEN NOT MATCHED``, no target alias and a table
  (not a query) as its source: deletes run first as ``DELETE ... USING``, the upserts are copied into a
  table of their own, and the MERGE only upserts (``Dialect.single_when_matched``).
- No ``DISTINCT ON``: the last change per key is kept with ``row_number()``.
- ``COPY ... FORMAT AS PARQUET`` matches columns by position, so the staging table holds every column of
  the staged file in the file's order (``staging_all_metadata``: table columns, ``_op``, ``_seq``, ``_pos``,
  ``_commit_time``, ``_unchanged``), exactly ``replicator.stage.arrow_schema``.
- VARCHAR lengths count bytes, not characters: a source ``varchar(n)`` (characters) becomes ``VARCHAR(4n)``,
  because UTF-8 needs up to 4 bytes per character, capped at Redshift's 65535. Redshift's CHAR holds
  single-byte characters only, so ``char(n)`` is a VARCHAR as well (the source's padding is in the data).
- ``_unchanged`` (a Parquet list) loads into SUPER; ``json_serialize`` of that array is compact JSON, so
  ``,"name",`` inside ``,<elements>,`` matches exactly one column name (a quote inside a JSON string is
  always escaped, so an unescaped ``,"`` only starts an element).
- ``ALTER COLUMN ... TYPE`` can only lengthen a VARCHAR and commits implicitly (``alter_commits``);
  int -> bigint and numeric precision changes are reported as incompatible.
- Concurrent writers fail with ``1023 serializable isolation violation``: every apply locks the ledger,
  the progress table and then the target, always in that order, and retries on 1023.
- DATE, TIMESTAMP and TIMESTAMPTZ hold 4713 BC to 294276 AD and no infinity; the stage holds PostgreSQL's
  infinities (and dates to 5874897 AD). A batch with such a value in a column of these types is refused
  before COPY (``unfit_temporal``), which stops its table with the reason, the same whether the column was
  there from the start or added later: the stage's stand-in for a timestamp infinity (the largest 64-bit
  microsecond count) is a valid Redshift timestamp in 294247 AD, so COPY would load a wrong value rather
  than fail. BC years and years past 9999 inside the range load as they are.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from replicator.config import Config
from replicator.model import Column, Manifest, TableSchema
from replicator.schema import RedshiftLayout, TableOptions
from replicator.sql import quote_ident, quote_literal, quote_table
from replicator.values import SCALAR_KINDS, TEXT_KINDS, temporal
from replicator.warehouses.base import ApplyResult
from replicator.warehouses.dialect import LEDGER, PROGRESS, Dialect
from replicator.warehouses.sql_base import RoundFailed, SqlWarehouse

VARCHAR_MAX = 65535
BYTES_PER_CHAR = 4  # UTF-8's worst case; sizing by it never truncates what the source column holds

REDSHIFT = Dialect(
    name="redshift",
    types={
        "smallint": "SMALLINT",
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "numeric": "DECIMAL(38,10)",
        "real": "REAL",
        "double": "DOUBLE PRECISION",
        "boolean": "BOOLEAN",
        "text": f"VARCHAR({VARCHAR_MAX})",
        "varchar": f"VARCHAR({VARCHAR_MAX})",
        "char": f"VARCHAR({VARCHAR_MAX})",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ",
        "time": "TIME",
        "uuid": "VARCHAR(36)",
        "json": "SUPER",
        "bytea": "VARBYTE(1024000)",
        "oid": "BIGINT",
        # PostgreSQL's text as it was written: Redshift has none of these types (its TIMETZ and INTERVAL
        # are not what COPY makes of a Parquet string), and no arrays (SUPER would change the text).
        **{k: f"VARCHAR({VARCHAR_MAX})" for k in TEXT_KINDS},
        **{f"{k}[]": f"VARCHAR({VARCHAR_MAX})" for k in SCALAR_KINDS},
    },
    sized={
        "numeric": "DECIMAL({precision},{scale})",
        "varchar": "VARCHAR({length})",
        "char": "VARCHAR({length})",
    },
    # The stage keeps a numeric without precision as its exact text (no decimal type holds every
    # PostgreSQL numeric), and COPY of a Parquet string into DECIMAL is not a conversion Redshift makes:
    # keep it as text. Declare the precision in schemas/ to get a DECIMAL column.
    unconstrained_numeric="VARCHAR(1024)",
    text_array="SUPER",
    unchanged_test="strpos(',' || btrim(json_serialize({list}), '[]') || ',', {json_item}) > 0",
    staging_create="CREATE TEMP TABLE",
    distinct_on=False,
    merge_statement=True,
    single_when_matched=True,
    target_alias=False,
    lock_target=f"LOCK {quote_table(LEDGER)}, {quote_table(PROGRESS)}, {{table}}",
    varchar_bytes_per_char=BYTES_PER_CHAR,
    varchar_max_bytes=VARCHAR_MAX,
    staging_all_metadata=True,
    now="SYSDATE",  # CURRENT_TIMESTAMP/NOW() are leader-node functions in Redshift
    alter_type="ALTER TABLE {table} ALTER COLUMN {column} TYPE {type}",
    alter_commits=True,
    widen_kinds=frozenset({"varchar", "char", "text"}),
)

# The classic Redshift upsert: DELETE ... USING, UPDATE ... FROM, INSERT ... WHERE NOT EXISTS (no MERGE).
REDSHIFT_DELETE_INSERT = dataclasses.replace(REDSHIFT, merge_statement=False)


def copy_parquet(staging: str, url: str, iam_role: str, *, region: str = "") -> str:
    """COPY a staged Parquet file from S3 into the staging table; columns match by position.

    ``SERIALIZETOJSON`` loads the nested ``_unchanged`` list into its SUPER column.
    """
    if not url.startswith("s3://"):
        raise ValueError(f"Redshift loads staging from S3 only, not {url!r}")
    region_clause = f" REGION {quote_literal(region)}" if region else ""
    return (
        f"COPY {quote_ident(staging)} FROM {quote_literal(url)} IAM_ROLE {quote_literal(iam_role)}"
        f"{region_clause} FORMAT AS PARQUET SERIALIZETOJSON"
    )


def layout(columns: tuple[Column, ...], spec: RedshiftLayout) -> tuple[dict[str, str], str]:
    """(column -> ENCODE clause, table suffix with DISTSTYLE/DISTKEY/SORTKEY) for ``create_table``."""
    encodings = {name: f"ENCODE {enc.upper()}" for name, enc in spec.encode}
    names = {c.name for c in columns}
    parts = []
    style = spec.diststyle or ("key" if spec.distkey else "")
    if style:
        parts.append(f"DISTSTYLE {style.upper()}")
    if spec.distkey and spec.distkey in names:
        parts.append(f"DISTKEY ({quote_ident(spec.distkey)})")
    sort = [k for k in spec.sortkey if k in names]
    if sort:
        parts.append(f"SORTKEY ({', '.join(quote_ident(k) for k in sort)})")
    return {k: v for k, v in encodings.items() if k in names}, "".join(f" {p}" for p in parts)


# Redshift's "4713 BC to 294276 AD": from Julian day 0 (4714-11-24 BC in the proleptic Gregorian calendar
# that PostgreSQL and the stage count in, as PostgreSQL's own lower bound) to the last day of 294276.
FIRST_DAY = temporal.days_from_civil(-4713, 11, 24)
LAST_DAY = temporal.days_from_civil(294276, 12, 31)


class ValueOutOfRange(ValueError):
    """A staged batch holds a date or timestamp that Redshift's column type cannot hold. Terminal for its
    table: the value is in the staged file, so every retry meets it again."""


def unfit_temporal(schema: TableSchema, parquet: Path) -> str | None:
    """Why the staged file's date and timestamp columns cannot go into Redshift (an infinity, a date past
    294276 AD), with what to do; None when they can. Names columns and counts values, never shows one
    (other than an infinity)."""
    stored = {f.name: f.type for f in pq.read_schema(parquet)}
    columns = [
        c
        for c in schema.columns
        if c.name in stored and (pa.types.is_date32(stored[c.name]) or pa.types.is_timestamp(stored[c.name]))
    ]
    if not columns:
        return None
    table = pq.read_table(parquet, columns=[c.name for c in columns])
    problems = []
    for c in columns:
        found = temporal.outside(table.column(c.name).combine_chunks(), FIRST_DAY, LAST_DAY)
        if found is None:
            continue
        n, example = found
        what = f"such as {example}" if example.endswith("infinity") else "outside that range"
        problems.append(f"column {c.name} ({c.type}): {n} value{'s' if n > 1 else ''} {what}")
    if not problems:
        return None
    return (
        f"{schema.table}: Redshift's DATE and TIMESTAMP hold 4713 BC to 294276 AD and no infinity; "
        + "; ".join(problems)
        + ". Declare such a column text in schemas/ (its values are then PostgreSQL's text, infinity"
        " included) and resync the table."
    )


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
    first_day, last_day = FIRST_DAY, LAST_DAY  # what DATE and TIMESTAMP hold (days from 1970-01-01)

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
        unfit = unfit_temporal(schema, parquet)
        if unfit is not None:
            raise ValueOutOfRange(unfit)
        if self._loader is not None:
            self._loader(self, schema, staging, parquet, moves)
            return
        assert self._batch is not None, "_load runs inside apply_round"
        url = f"{self._staging_url}/{self._batch.data_key}"
        self._execute(copy_parquet(staging, url, self._iam_role, region=self._region))

    def _layout(self, schema: TableSchema, options: TableOptions) -> dict[str, Any]:
        if not self._physical_layout:
            return {}
        encodings, suffix = layout(schema.columns, options.redshift)
        return {"column_suffix": encodings, "table_suffix": suffix}

    round_commits = True  # one commit per merge round: Redshift serialises commits, each costs ~100s of ms

    def apply_round(self, batches: list[tuple[Manifest, TableSchema, Path]]) -> list[ApplyResult]:
        """``SqlWarehouse.apply_round``, retried while Redshift reports a serializable isolation violation
        (another writer committed first: the whole round is tried again)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return super().apply_round(batches)
            except RoundFailed as exc:
                if not is_serialization_conflict(exc.error) or attempt >= self._retry.attempts:
                    raise
                delay = self._retry.delay(attempt)
                log.warning(
                    "serialization_conflict_retry",
                    tables=sorted({str(m.table) for m, _, _ in batches}),
                    batch_ids=[m.batch_id for m, _, _ in batches],
                    attempt=attempt,
                    delay_seconds=round(delay, 3),
                )
                time.sleep(delay)

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


def open_warehouse(cfg: Config, *, read_only: bool = False) -> RedshiftWarehouse:
    """``[warehouse] kind = "redshift"``, with password or IAM auth; ``read_only`` is the caller's promise.
    The schemas' per-table options (layout, deletes) are applied by the composition root."""
    import redshift_connector

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
    return RedshiftWarehouse(
        lambda: redshift_connector.connect(**kwargs),
        staging_url=cfg.staging.path,
        iam_role=wh.iam_role,
        region=wh.region or cfg.s3.region,
    )
