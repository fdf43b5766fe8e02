"""Golden tests of every SQL Server CDC query: the full text and parameters, as sent through pymssql."""

from __future__ import annotations

import pytest

from replicator.model import TableId
from replicator.sources.sqlserver import queries as q
from replicator.values import LogicalType
from tests.helpers.fake_mssql import quote

L1 = bytes.fromhex("0000002a000001f00003")
L2 = bytes.fromhex("0000002a000002100001")
S1 = bytes.fromhex("0000002a000001f00002")
T = TableId("dbo", "pay]ments")


def rendered(query: q.Query) -> str:
    """The statement as pymssql sends it: parameters rendered client-side."""
    return query.sql % {k: quote(v) for k, v in query.params.items()} if query.params else query.sql


def test_all_changes_page_seeks_on_lsn_and_seqval_and_orders_update_images_together() -> None:
    query = q.all_changes_page(
        "dbo_payments", ["id", "amount"], from_lsn=L1, to_lsn=L2, from_seqval=S1, limit=500
    )
    assert rendered(query) == (
        "SELECT TOP (500) __$start_lsn, __$seqval, __$operation, "
        "sys.fn_cdc_map_lsn_to_time(__$start_lsn) AS __commit_time, [id], [amount] "
        "FROM cdc.[fn_cdc_get_all_changes_dbo_payments](0x0000002a000001f00003, 0x0000002a000002100001, "
        "N'all update old') "
        "WHERE __$start_lsn > 0x0000002a000001f00003 OR __$seqval >= 0x0000002a000001f00002 "
        "ORDER BY __$start_lsn, __$seqval, __$operation"
    )
    assert query.params == {"limit": 500, "from_lsn": L1, "to_lsn": L2, "from_seqval": S1}


def test_net_changes_page_orders_by_lsn_then_primary_key_and_pages_by_offset() -> None:
    query = q.net_changes_page("ci", ["id", "x"], ["id"], from_lsn=L1, to_lsn=L2, offset=20, limit=10)
    assert rendered(query) == (
        "SELECT __$start_lsn, __$operation, sys.fn_cdc_map_lsn_to_time(__$start_lsn) AS __commit_time, "
        "[id], [x] FROM cdc.[fn_cdc_get_net_changes_ci]("
        "0x0000002a000001f00003, 0x0000002a000002100001, N'all') "
        "ORDER BY __$start_lsn, [id] OFFSET 20 ROWS FETCH NEXT 10 ROWS ONLY"
    )


def test_identifiers_are_bracket_quoted_with_closing_brackets_doubled() -> None:
    query = q.all_changes_page("a]b", ["c]d"], from_lsn=L1, to_lsn=L2, from_seqval=S1, limit=2)
    assert "cdc.[fn_cdc_get_all_changes_a]]b](" in query.sql
    assert ", [c]]d] FROM" in query.sql


def test_snapshot_first_page_reads_in_primary_key_order() -> None:
    query = q.snapshot_page(T, ["a", "b", "v"], ["a", "b"], after=None, limit=1000)
    assert rendered(query) == "SELECT TOP (1000) [a], [b], [v] FROM [dbo].[pay]]ments] ORDER BY [a], [b]"


def test_snapshot_next_page_seeks_after_a_composite_key() -> None:
    query = q.snapshot_page(T, ["a", "b", "v"], ["a", "b"], after=["7", "it's"], limit=1000)
    assert rendered(query) == (
        "SELECT TOP (1000) [a], [b], [v] FROM [dbo].[pay]]ments] "
        "WHERE ([a] > N'7') OR ([a] = N'7' AND [b] > N'it''s') ORDER BY [a], [b]"
    )


def test_snapshot_without_primary_key_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a primary key"):
        q.snapshot_page(T, ["a"], [], after=None, limit=10)


def test_lsn_function_queries() -> None:
    assert rendered(q.min_lsn("dbo_payments")) == "SELECT sys.fn_cdc_get_min_lsn(N'dbo_payments') AS min_lsn"
    assert rendered(q.max_lsn()) == "SELECT sys.fn_cdc_get_max_lsn() AS max_lsn"
    assert (
        rendered(q.increment_lsn(L1)) == "SELECT sys.fn_cdc_increment_lsn(0x0000002a000001f00003) AS next_lsn"
    )
    assert rendered(q.lsn_to_time(L1)) == (
        "SELECT sys.fn_cdc_map_lsn_to_time(0x0000002a000001f00003) AS commit_time"
    )


def test_start_up_check_queries() -> None:
    assert rendered(q.database_cdc_enabled()) == (
        "SELECT name, is_cdc_enabled FROM sys.databases WHERE database_id = DB_ID()"
    )
    assert rendered(q.capture_instances()) == (
        "SELECT capture_instance, OBJECT_SCHEMA_NAME(source_object_id) AS source_schema, "
        "OBJECT_NAME(source_object_id) AS source_table, supports_net_changes "
        "FROM cdc.change_tables ORDER BY capture_instance"
    )
    assert rendered(q.captured_columns("o'brien")) == (
        "SELECT cc.column_name FROM cdc.captured_columns AS cc "
        "JOIN cdc.change_tables AS ct ON ct.object_id = cc.object_id "
        "WHERE ct.capture_instance = N'o''brien' ORDER BY cc.column_ordinal"
    )
    assert rendered(q.capture_job()) == (
        "SELECT j.job_id, CASE WHEN a.start_execution_date IS NOT NULL AND a.stop_execution_date IS NULL "
        "THEN 1 ELSE 0 END AS running FROM msdb.dbo.cdc_jobs AS j "
        "LEFT JOIN msdb.dbo.sysjobactivity AS a ON a.job_id = j.job_id "
        "AND a.session_id = (SELECT MAX(session_id) FROM msdb.dbo.syssessions) "
        "WHERE j.database_id = DB_ID() AND j.job_type = N'capture'"
    )


def test_schema_queries() -> None:
    assert rendered(q.table_columns(T)) == (
        "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, "
        "IS_NULLABLE FROM INFORMATION_SCHEMA.COLUMNS "
        "WHERE TABLE_SCHEMA = N'dbo' AND TABLE_NAME = N'pay]ments' "
        "ORDER BY ORDINAL_POSITION"
    )
    assert rendered(q.primary_key(T)) == (
        "SELECT kcu.COLUMN_NAME FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS AS tc "
        "JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE AS kcu ON kcu.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA "
        "AND kcu.CONSTRAINT_NAME = tc.CONSTRAINT_NAME WHERE tc.CONSTRAINT_TYPE = N'PRIMARY KEY' "
        "AND tc.TABLE_SCHEMA = N'dbo' AND tc.TABLE_NAME = N'pay]ments' ORDER BY kcu.ORDINAL_POSITION"
    )


@pytest.mark.parametrize(
    ("sql_type", "length", "precision", "scale", "expected"),
    [
        ("bigint", None, 19, 0, "bigint"),
        ("int", None, 10, 0, "integer"),
        ("tinyint", None, 3, 0, "smallint"),
        ("bit", None, None, None, "boolean"),
        ("decimal", None, 12, 2, "numeric(12,2)"),
        ("money", None, 19, 4, "numeric(19,4)"),
        ("smallmoney", None, 10, 4, "numeric(10,4)"),
        ("float", None, 53, None, "double"),
        ("float", None, 24, None, "real"),
        ("nvarchar", 80, None, None, "varchar(80)"),
        ("nvarchar", -1, None, None, "text"),
        ("nchar", 3, None, None, "char(3)"),
        ("datetime2", None, None, None, "timestamp"),
        ("datetimeoffset", None, None, None, "timestamptz"),
        ("uniqueidentifier", None, None, None, "uuid"),
        ("varbinary", -1, None, None, "bytea"),
        ("xml", -1, None, None, "text"),
    ],
)
def test_sql_server_types_map_to_replicator_types(
    sql_type: str, length: int | None, precision: int | None, scale: int | None, expected: str
) -> None:
    assert str(q.logical_type(sql_type, length, precision, scale)) == expected


def test_an_unknown_sql_server_type_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="'cursor'"):
        q.logical_type("cursor", None, None, None)
    assert q.logical_type("NVARCHAR", 5, None, None) == LogicalType("varchar", length=5)
