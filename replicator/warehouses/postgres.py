"""PostgreSQL (15+, for MERGE) as a warehouse: analytics replicas, and the Redshift stand-in in tests.

``POSTGRES`` is its dialect (types and capability flags for the shared SQL builders), ``PostgresWarehouse``
the connection side.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from replicator.config import Config
from replicator.model import TableSchema
from replicator.values import TEXT_KINDS, temporal
from replicator.warehouses.dialect import Dialect
from replicator.warehouses.sql_base import SqlWarehouse

_SCALARS = {
    "smallint": "smallint",
    "integer": "integer",
    "bigint": "bigint",
    "numeric": "numeric",
    "real": "real",
    "double": "double precision",
    "boolean": "boolean",
    "text": "text",
    "varchar": "varchar",
    # Unsized char would mean char(1) in PostgreSQL and truncate; text keeps whatever was sent.
    "char": "text",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
    "uuid": "uuid",
    "json": "jsonb",
    "bytea": "bytea",
    "oid": "oid",
    # PostgreSQL's own types read the text they wrote: the value comes back exactly.
    **{k: k for k in TEXT_KINDS},
    # Money's text depends on lc_monetary (on the source's and the target's session alike): text keeps what
    # the source wrote.
    "money": "text",
}
_SIZED = {
    "numeric": "numeric({precision},{scale})",
    "varchar": "varchar({length})",
    "char": "char({length})",
    "bit": "bit({length})",
    "varbit": "varbit({length})",
}

POSTGRES = Dialect(
    name="postgres",
    # Arrays are arrays of the element's type: every dimension and lower bound comes back as it was.
    types={**_SCALARS, **{f"{k}[]": f"{v}[]" for k, v in _SCALARS.items()}},
    sized={**_SIZED, **{f"{k}[]": f"{v}[]" for k, v in _SIZED.items()}},
    unconstrained_numeric="numeric",
    text_array="text[]",
    unchanged_test="{name} = ANY({list})",
    # Temp tables skip the WAL and ON COMMIT DROP removes them on commit and on rollback alike.
    staging_create="CREATE TEMP TABLE",
    # ALTER COLUMN TYPE rewrites the table when needed; every widening in evolution.py is lossless
    widen_kinds=frozenset(
        {"smallint", "integer", "bigint", "numeric", "real", "double", "varchar", "char", "text"}
    ),
    staging_suffix=" ON COMMIT DROP",
    # Serialises appliers of one table so the ledger check and the merge see the same state; readers
    # (ACCESS SHARE) are not blocked.
    lock_target="LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE",
)


_SLICE_ROWS = 100_000
# ... or fewer: about this many bytes of the file's values per slice. A slice is held three times at once
# (its Arrow columns, their CSV text, the driver's copy of it), so a 64 MB batch of 1 MB values read as one
# slice of 100k rows added ~200 MB to the process while it loaded.
_SLICE_BYTES = 8 << 20
_COPY_CHUNK = 1 << 20  # psycopg2 reads the COPY source in 8 KiB pieces by default: far too many round trips


class PostgresWarehouse(SqlWarehouse):
    """Loads staging with ``COPY FROM STDIN`` (CSV rendered by Arrow, no per-row Python for the common
    types) into a temp table and merges with ``MERGE``. Commits are synchronous: the ledger row is durable
    when ``apply`` returns."""

    name = "postgres"
    dialect = POSTGRES
    # Data-modifying CTEs with RETURNING: a merge that views read locates each touched row once.
    captures_old_images = True

    def __init__(self, dsn: str) -> None:
        self._conn = psycopg2.connect(dsn)
        self._conn.autocommit = True  # transactions are explicit (BEGIN in _begin), never implicit
        with self._conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            # Session-only: a 100k-row batch's staging table fits in temp buffers (the 8 MB default spills
            # it to disk; settable only before the session's first temp table), and the merge's hash join
            # does not spill in batches. Nothing is changed for other sessions.
            cur.execute("SET temp_buffers = '128MB'")
            cur.execute("SET work_mem = '64MB'")

    def _execute(self, sql: str) -> None:
        with self._conn.cursor() as cur:
            cur.execute(sql)

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()

    def _load(self, schema: TableSchema, staging: str, parquet: Path, *, moves: bool) -> None:
        """COPY the file in slices of ``_SLICE_ROWS`` rows or about ``_SLICE_BYTES``: memory stays bounded
        however large the batch and its values."""
        columns = list(self.dialect.staging_columns(schema, moves=moves))
        names = [f"c{i}" for i in range(len(columns))]  # CSV has no header; names only keep Arrow happy
        copy = self.dialect.copy_from_stdin(schema, staging, moves=moves)
        # Without pre-buffering: pyarrow's default reads ahead of the slice asked for (a 64 MB batch of 1 MB
        # values held 52 MB of Arrow memory while read slice by slice, 24 MB without).
        file = pq.ParquetFile(parquet, pre_buffer=False)
        for piece in file.iter_batches(batch_size=slice_rows(file.metadata), columns=columns):
            table = pa.table([_csv_ready(piece.column(c)) for c in columns], names=names)
            buf = io.BytesIO()
            pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
            buf.seek(0)
            with self._conn.cursor() as cur:
                cur.copy_expert(copy, buf, size=_COPY_CHUNK)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only query in its own transaction (tests, admin tooling)."""
        return self._query(sql)

    def close(self) -> None:
        self._conn.close()


def slice_rows(meta: pq.FileMetaData) -> int:
    """Rows per slice of a staged file: ``_SLICE_ROWS``, or fewer so that a slice holds about
    ``_SLICE_BYTES`` of values (by the file's largest row group, uncompressed)."""
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    widest = max((g.total_byte_size / max(1, g.num_rows) for g in groups), default=0.0)
    return max(1, min(_SLICE_ROWS, int(_SLICE_BYTES / widest) if widest else _SLICE_ROWS))


def _csv_ready(column: pa.Array) -> pa.Array:
    """Make a column writable as PostgreSQL-readable CSV.

    Arrow renders numbers, decimals, dates, times and naive timestamps in forms PostgreSQL reads,
    quotes every string (so ``""`` is an empty string and an unquoted empty field is NULL, as COPY CSV
    expects). Binary and lists it cannot render; those take per-value Python, which only bytea columns
    and batches with unchanged TOAST values pay.
    """
    t = column.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return pa.array([None if v is None else "\\x" + v.hex() for v in column.to_pylist()], pa.string())
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if column.null_count == len(column):
            return pa.nulls(len(column), pa.string())
        return pa.array([None if v is None else _text_array(v) for v in column.to_pylist()], pa.string())
    if pa.types.is_null(t):
        return pa.nulls(len(column), pa.string())
    if pa.types.is_temporal(t):
        # Infinities, BC years and 24:00:00 Arrow renders in forms PostgreSQL does not read.
        edge = temporal.postgres_text(column)
        if edge is not None:
            return edge
    if pa.types.is_timestamp(t) and t.tz is not None:
        # Arrow formats zoned timestamps through its time zone database: ~30x slower than naive ones. The
        # values are UTC instants, so format them naive and state the offset.
        naive = pc.cast(column.cast(pa.timestamp(t.unit)), pa.string())
        return pc.binary_join_element_wise(naive, pa.scalar("+00"), "")
    return column


def _text_array(values: list[str | None]) -> str:
    """A PostgreSQL text[] literal; every element quoted so commas, braces and spaces are data."""
    items = ("NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(items) + "}"


def open_warehouse(cfg: Config, *, read_only: bool = False) -> PostgresWarehouse:
    """``[warehouse] kind = "postgres"``. ``read_only`` is the caller's promise: nothing enforces it here."""
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
