"""SQL Server change data capture queries: pure builders, no connections.

Every builder returns a ``Query``: T-SQL with pymssql ``pyformat`` placeholders (``%(name)s``) and its
parameters. pymssql renders the parameters client-side (``bytes`` as ``0x...``, ``str`` as ``N'...'``), so
LSNs are passed as 10-byte ``bytes`` (SQL Server's ``binary(10)``). Identifiers are bracket-quoted through
``replicator.sql.ident``; no builder holds a literal ``%`` of its own.

The functions used and what they promise (SQL Server documentation):

- ``cdc.fn_cdc_get_all_changes_<ci>(from_lsn, to_lsn, N'all update old')``: every change with
  ``from_lsn <= __$start_lsn <= to_lsn``; ``__$operation`` 1 delete (old image), 2 insert, 3 update's old
  image, 4 update's new image; 3 and 4 of one update share ``__$seqval``. ``from_lsn`` must not be below
  ``sys.fn_cdc_get_min_lsn(ci)`` and ``to_lsn`` not above ``sys.fn_cdc_get_max_lsn()``, or the call fails
  (error 313). The result has no order of its own: we order by ``__$start_lsn, __$seqval, __$operation``.
- ``cdc.fn_cdc_get_net_changes_<ci>(from_lsn, to_lsn, N'all')``: one row per changed source row with its
  final image, ``__$start_lsn`` of its last change, ``__$operation`` 1, 2 or 4; no ``__$seqval``.
- ``sys.fn_cdc_increment_lsn(lsn)``: the next LSN, to read strictly after a position.
- ``sys.fn_cdc_map_lsn_to_time(lsn)``: the commit time (server local time) of the transaction at ``lsn``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from replicator.model import TableId
from replicator.sql import quote_mssql_ident, quote_mssql_table
from replicator.values import LogicalType

# Columns every change row starts with, in this order, before the table's own columns.
ALL_META = ("__$start_lsn", "__$seqval", "__$operation", "__commit_time")
NET_META = ("__$start_lsn", "__$operation", "__commit_time")


@dataclass(frozen=True, slots=True)
class Query:
    sql: str
    params: Mapping[str, object] = field(default_factory=dict)


def _cols(columns: Sequence[str]) -> str:
    return ", ".join(quote_mssql_ident(c) for c in columns)


# -- start-up checks -----------------------------------------------------------------------------------------


def database_cdc_enabled() -> Query:
    """One row: ``name``, ``is_cdc_enabled`` (1 once ``sys.sp_cdc_enable_db`` ran) of the current database."""
    return Query("SELECT name, is_cdc_enabled FROM sys.databases WHERE database_id = DB_ID()")


def capture_instances() -> Query:
    """Every capture instance of the database with the table it captures and whether net changes work."""
    return Query(
        "SELECT capture_instance, OBJECT_SCHEMA_NAME(source_object_id) AS source_schema, "
        "OBJECT_NAME(source_object_id) AS source_table, supports_net_changes "
        "FROM cdc.change_tables ORDER BY capture_instance"
    )


def captured_columns(capture_instance: str) -> Query:
    """The columns a capture instance records, in column order (a column added later is not among them)."""
    return Query(
        "SELECT cc.column_name FROM cdc.captured_columns AS cc "
        "JOIN cdc.change_tables AS ct ON ct.object_id = cc.object_id "
        "WHERE ct.capture_instance = %(capture_instance)s ORDER BY cc.column_ordinal",
        {"capture_instance": capture_instance},
    )


def capture_job() -> Query:
    """The database's capture job (``msdb.dbo.cdc_jobs``) and whether SQL Server Agent runs it now.

    ``running`` is 1 when the job's latest activity in the Agent's current session (``msdb.dbo.syssessions``)
    has started and not stopped; the capture job is continuous, so it should always be running. No row: the
    database has no capture job (it was dropped, or the platform has no Agent).
    """
    return Query(
        "SELECT j.job_id, CASE WHEN a.start_execution_date IS NOT NULL AND a.stop_execution_date IS NULL "
        "THEN 1 ELSE 0 END AS running "
        "FROM msdb.dbo.cdc_jobs AS j "
        "LEFT JOIN msdb.dbo.sysjobactivity AS a ON a.job_id = j.job_id "
        "AND a.session_id = (SELECT MAX(session_id) FROM msdb.dbo.syssessions) "
        "WHERE j.database_id = DB_ID() AND j.job_type = N'capture'"
    )


# -- LSNs ----------------------------------------------------------------------------------------------------


def min_lsn(capture_instance: str) -> Query:
    """The oldest LSN still held for the capture instance (moves forward with cleanup); all zeros if the
    instance does not exist."""
    return Query(
        "SELECT sys.fn_cdc_get_min_lsn(%(capture_instance)s) AS min_lsn",
        {"capture_instance": capture_instance},
    )


def max_lsn() -> Query:
    """The newest LSN the capture process has recorded (``cdc.lsn_time_mapping``)."""
    return Query("SELECT sys.fn_cdc_get_max_lsn() AS max_lsn")


def increment_lsn(lsn: bytes) -> Query:
    return Query("SELECT sys.fn_cdc_increment_lsn(%(lsn)s) AS next_lsn", {"lsn": lsn})


def lsn_to_time(lsn: bytes) -> Query:
    return Query("SELECT sys.fn_cdc_map_lsn_to_time(%(lsn)s) AS commit_time", {"lsn": lsn})


# -- changes -------------------------------------------------------------------------------------------------


def all_changes_page(
    capture_instance: str,
    columns: Sequence[str],
    *,
    from_lsn: bytes,
    to_lsn: bytes,
    from_seqval: bytes,
    limit: int,
) -> Query:
    """Up to ``limit`` change rows in ``[from_lsn, to_lsn]`` at or after ``(from_lsn, from_seqval)``.

    Columns: ``ALL_META`` then ``columns``. Update old images (3) come right before their new image (4).
    Paging seeks on ``(__$start_lsn, __$seqval)`` so each page is one short query whatever the backlog; the
    seek is inclusive (``>=``) so an update pair cut by the page end is read whole on the next page.
    """
    fn = quote_mssql_ident(f"fn_cdc_get_all_changes_{capture_instance}")
    return Query(
        f"SELECT TOP (%(limit)s) __$start_lsn, __$seqval, __$operation, "
        f"sys.fn_cdc_map_lsn_to_time(__$start_lsn) AS __commit_time, {_cols(columns)} "
        f"FROM cdc.{fn}(%(from_lsn)s, %(to_lsn)s, N'all update old') "
        f"WHERE __$start_lsn > %(from_lsn)s OR __$seqval >= %(from_seqval)s "
        f"ORDER BY __$start_lsn, __$seqval, __$operation",
        {"limit": limit, "from_lsn": from_lsn, "to_lsn": to_lsn, "from_seqval": from_seqval},
    )


def net_changes_page(
    capture_instance: str,
    columns: Sequence[str],
    primary_key: Sequence[str],
    *,
    from_lsn: bytes,
    to_lsn: bytes,
    offset: int,
    limit: int,
) -> Query:
    """Rows ``offset`` .. ``offset + limit - 1`` of the net changes in ``[from_lsn, to_lsn]``.

    Columns: ``NET_META`` then ``columns``. Ordered by ``__$start_lsn`` then the primary key, which is a
    total order (one row per key), so the same range always pages the same way.
    """
    fn = quote_mssql_ident(f"fn_cdc_get_net_changes_{capture_instance}")
    return Query(
        f"SELECT __$start_lsn, __$operation, sys.fn_cdc_map_lsn_to_time(__$start_lsn) AS __commit_time, "
        f"{_cols(columns)} FROM cdc.{fn}(%(from_lsn)s, %(to_lsn)s, N'all') "
        f"ORDER BY __$start_lsn, {_cols(primary_key)} "
        f"OFFSET %(offset)s ROWS FETCH NEXT %(limit)s ROWS ONLY",
        {"from_lsn": from_lsn, "to_lsn": to_lsn, "offset": offset, "limit": limit},
    )


# -- initial load and schema ---------------------------------------------------------------------------------


def snapshot_page(
    table: TableId,
    columns: Sequence[str],
    primary_key: Sequence[str],
    *,
    after: Sequence[object] | None,
    limit: int,
) -> Query:
    """Up to ``limit`` rows of the table in primary key order, after the key ``after`` (None: from the start).

    Keyset paging: a row present for the whole load is read exactly once, whatever is inserted or deleted
    meanwhile (those changes are replayed from the change table afterwards).
    """
    if not primary_key:
        raise ValueError(f"{table}: an initial load needs a primary key")
    where = ""
    params: dict[str, object] = {"limit": limit}
    if after is not None:
        if len(after) != len(primary_key):
            raise ValueError(f"{table}: key {after!r} does not match primary key {list(primary_key)}")
        terms = []
        for i in range(len(primary_key)):
            parts = [f"{quote_mssql_ident(primary_key[j])} = %(k{j})s" for j in range(i)]
            parts.append(f"{quote_mssql_ident(primary_key[i])} > %(k{i})s")
            terms.append("(" + " AND ".join(parts) + ")")
        where = " WHERE " + " OR ".join(terms)
        params.update({f"k{i}": v for i, v in enumerate(after)})
    return Query(
        f"SELECT TOP (%(limit)s) {_cols(columns)} FROM {quote_mssql_table(table)}{where} "
        f"ORDER BY {_cols(primary_key)}",
        params,
    )


def table_columns(table: TableId) -> Query:
    """The table's columns in order with what ``logical_type`` needs."""
    return Query(
        "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, "
        "IS_NULLABLE FROM INFORMATION_SCHEMA.COLUMNS "
        "WHERE TABLE_SCHEMA = %(schema)s AND TABLE_NAME = %(table)s "
        "ORDER BY ORDINAL_POSITION",
        {"schema": table.schema, "table": table.name},
    )


def primary_key(table: TableId) -> Query:
    return Query(
        "SELECT kcu.COLUMN_NAME FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS AS tc "
        "JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE AS kcu ON kcu.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA "
        "AND kcu.CONSTRAINT_NAME = tc.CONSTRAINT_NAME "
        "WHERE tc.CONSTRAINT_TYPE = N'PRIMARY KEY' AND tc.TABLE_SCHEMA = %(schema)s "
        "AND tc.TABLE_NAME = %(table)s ORDER BY kcu.ORDINAL_POSITION",
        {"schema": table.schema, "table": table.name},
    )


_SIMPLE = {
    "bigint": "bigint", "int": "integer", "smallint": "smallint", "tinyint": "smallint", "bit": "boolean",
    "real": "real", "date": "date", "time": "time", "datetime": "timestamp", "datetime2": "timestamp",
    "smalldatetime": "timestamp", "datetimeoffset": "timestamptz", "uniqueidentifier": "uuid",
    "text": "text", "ntext": "text", "xml": "text", "sql_variant": "text", "binary": "bytea",
    "varbinary": "bytea", "image": "bytea", "timestamp": "bytea", "rowversion": "bytea",
    "hierarchyid": "bytea", "geometry": "bytea", "geography": "bytea",
}  # fmt: skip


def logical_type(
    data_type: str, char_length: int | None, precision: int | None, scale: int | None
) -> LogicalType:
    """Map an INFORMATION_SCHEMA.COLUMNS type to a replicator type (and so to Parquet and each warehouse).

    ``float`` is ``double`` unless its precision is 24 or less (then ``real``); ``money`` is numeric(19,4);
    ``(max)`` strings (length -1) become ``text``. Spatial and CLR types arrive as their bytes.
    """
    t = data_type.lower()
    if t in ("decimal", "numeric"):
        return LogicalType("numeric", precision=precision, scale=scale or 0)
    if t == "money":
        return LogicalType("numeric", precision=19, scale=4)
    if t == "smallmoney":
        return LogicalType("numeric", precision=10, scale=4)
    if t == "float":
        return LogicalType("real" if precision is not None and precision <= 24 else "double")
    if t in ("varchar", "nvarchar", "char", "nchar"):
        if char_length is None or char_length < 0:
            return LogicalType("text")
        return LogicalType("char" if t.endswith("char") and "var" not in t else "varchar", length=char_length)
    if t in _SIMPLE:
        return LogicalType(_SIMPLE[t])
    raise ValueError(f"SQL Server type {data_type!r} has no replicator type")
