"""Golden tests of the SQL builders: the full statement text each dialect produces.

The conformance suite runs these statements on real engines; these tests pin their exact text, so a change
in the generated SQL is a deliberate, reviewed diff.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from replicator.model import Column, TableId, TableSchema
from replicator.values import parse_type
from replicator.warehouses.dialect import Dialect
from replicator.warehouses.duckdb import DUCKDB
from replicator.warehouses.postgres import POSTGRES
from tests.helpers.sql_examples import LINKS, manifest, orders

ORDERS = orders()
MANIFEST = manifest(ORDERS.table, data_key="k")

TYPES = [
    # logical type, DuckDB, PostgreSQL
    ("smallint", "SMALLINT", "smallint"),
    ("integer", "INTEGER", "integer"),
    ("bigint", "BIGINT", "bigint"),
    ("numeric(12,2)", "DECIMAL(12,2)", "numeric(12,2)"),
    ("numeric(38)", "DECIMAL(38,0)", "numeric(38,0)"),
    ("numeric", "DECIMAL(38,10)", "numeric"),
    ("real", "REAL", "real"),
    ("double precision", "DOUBLE", "double precision"),
    ("boolean", "BOOLEAN", "boolean"),
    ("text", "VARCHAR", "text"),
    ("varchar(80)", "VARCHAR", "varchar(80)"),
    ("varchar", "VARCHAR", "varchar"),
    ("char(3)", "VARCHAR", "char(3)"),
    ("char", "VARCHAR", "text"),
    ("date", "DATE", "date"),
    ("timestamp", "TIMESTAMP", "timestamp"),
    ("timestamptz", "TIMESTAMPTZ", "timestamptz"),
    ("time", "TIME", "time"),
    ("uuid", "UUID", "uuid"),
    ("json", "JSON", "jsonb"),
    ("bytea", "BLOB", "bytea"),
]


@pytest.mark.parametrize(("logical", "duck", "pg"), TYPES)
def test_each_logical_type_maps_to_the_dialects_ddl(logical: str, duck: str, pg: str) -> None:
    t = parse_type(logical)
    assert (DUCKDB.column_type(t), POSTGRES.column_type(t)) == (duck, pg)


def test_the_type_maps_cover_every_kind() -> None:
    from replicator.values import KINDS

    assert set(DUCKDB.types) == set(POSTGRES.types) == set(KINDS)


def test_setup_creates_schema_ledger_and_progress_postgres() -> None:
    assert POSTGRES.setup() == [
        'CREATE SCHEMA IF NOT EXISTS "_replicator"',
        'CREATE TABLE IF NOT EXISTS "_replicator"."batches" ("batch_id" varchar(64) NOT NULL,'
        ' "table_schema" text NOT NULL, "table_name" text NOT NULL, "first_position" text NOT NULL,'
        ' "last_position" text NOT NULL, "rows" bigint NOT NULL, "inserts" bigint NOT NULL,'
        ' "updates" bigint NOT NULL, "deletes" bigint NOT NULL, "min_commit_time" timestamptz,'
        ' "max_commit_time" timestamptz, "applied_at" timestamptz NOT NULL, PRIMARY KEY ("batch_id"))',
        'CREATE TABLE IF NOT EXISTS "_replicator"."tables" ("table_schema" text NOT NULL,'
        ' "table_name" text NOT NULL, "applied_through" text NOT NULL, "batches" bigint NOT NULL,'
        ' "rows" bigint NOT NULL, "last_commit_time" timestamptz, "last_applied_at" timestamptz NOT NULL,'
        ' PRIMARY KEY ("table_schema", "table_name"))',
    ]


def test_setup_uses_duckdb_types() -> None:
    assert DUCKDB.setup()[2] == (
        'CREATE TABLE IF NOT EXISTS "_replicator"."tables" ("table_schema" VARCHAR NOT NULL,'
        ' "table_name" VARCHAR NOT NULL, "applied_through" VARCHAR NOT NULL, "batches" BIGINT NOT NULL,'
        ' "rows" BIGINT NOT NULL, "last_commit_time" TIMESTAMPTZ, "last_applied_at" TIMESTAMPTZ NOT NULL,'
        ' PRIMARY KEY ("table_schema", "table_name"))'
    )


def test_leftover_staging_tables_are_found_by_prefix_without_like() -> None:
    assert POSTGRES.list_leftover_staging() == (
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = '_replicator'"
        " AND table_type = 'BASE TABLE' AND left(table_name, 5) = '_stg_'"
    )


@pytest.mark.parametrize(
    ("dialect", "ddl"),
    [
        (POSTGRES, '"id" bigint NOT NULL, "name" varchar(80), "amount" numeric(12,2)'),
        (DUCKDB, '"id" BIGINT NOT NULL, "name" VARCHAR, "amount" DECIMAL(12,2)'),
    ],
)
def test_create_table_quotes_names_and_declares_the_primary_key(dialect: Dialect, ddl: str) -> None:
    assert dialect.create_table(ORDERS) == [
        'CREATE SCHEMA IF NOT EXISTS "sales"',
        f'CREATE TABLE IF NOT EXISTS "sales"."order ""lines""" ({ddl}, PRIMARY KEY ("id"))',
    ]


def test_staging_is_a_temp_table_without_constraints() -> None:
    assert POSTGRES.create_staging(ORDERS, "_stg_x") == (
        'CREATE TEMP TABLE "_stg_x" ("id" bigint, "name" varchar(80), "amount" numeric(12,2), "_op" text,'
        ' "_seq" bigint, "_unchanged" text[]) ON COMMIT DROP'
    )
    assert DUCKDB.create_staging(ORDERS, "_stg_x") == (
        'CREATE TEMP TABLE "_stg_x" ("id" BIGINT, "name" VARCHAR, "amount" DECIMAL(12,2), "_op" VARCHAR,'
        ' "_seq" BIGINT, "_unchanged" VARCHAR[])'
    )


def test_loaders_name_every_staging_column() -> None:
    cols = '"id", "name", "amount", "_op", "_seq", "_unchanged"'
    assert (
        POSTGRES.copy_from_stdin(ORDERS, "_stg_x") == f'COPY "_stg_x" ({cols}) FROM STDIN WITH (FORMAT csv)'
    )
    assert DUCKDB.insert_from_parquet(ORDERS, "_stg_x", "/data/it's.parquet") == (
        f"INSERT INTO \"_stg_x\" ({cols}) SELECT {cols} FROM read_parquet('/data/it''s.parquet')"
    )


def test_a_batch_with_key_changes_loads_from_seq_and_fills_moved_rows_from_the_old_keys_target_row() -> None:
    cols = '"id", "name", "amount", "_op", "_seq", "_unchanged", "_from_seq"'
    assert POSTGRES.copy_from_stdin(ORDERS, "_stg_x", moves=True) == (
        f'COPY "_stg_x" ({cols}) FROM STDIN WITH (FORMAT csv)'
    )
    assert POSTGRES.create_staging(ORDERS, "_stg_x", moves=True).endswith(
        '"_unchanged" text[], "_from_seq" bigint) ON COMMIT DROP'
    )
    assert POSTGRES.fill_moved(ORDERS, "_stg_x", ["name"]) == (
        'UPDATE "_stg_x" AS s SET "name" = CASE WHEN \'name\' = ANY(s."_unchanged") THEN t."name"'
        ' ELSE s."name" END, "_unchanged" = NULL FROM "_stg_x" AS o, "sales"."order ""lines""" AS t'
        ' WHERE o."_seq" = s."_from_seq" AND t."id" = o."id"'
    )


def test_reduce_keeps_the_highest_seq_per_key() -> None:
    assert POSTGRES.reduce(LINKS, "_stg_x", "_stg_x_r") == (
        'CREATE TEMP TABLE "_stg_x_r" ON COMMIT DROP AS SELECT DISTINCT ON ("a", "b") * FROM "_stg_x"'
        ' ORDER BY "a", "b", "_seq" DESC'
    )
    assert DUCKDB.reduce(LINKS, "_stg_x", "_stg_x_r") == (
        'CREATE TEMP TABLE "_stg_x_r" AS SELECT s.* FROM "_stg_x" AS s JOIN (SELECT "a", "b", max("_seq") AS'
        ' "_seq" FROM "_stg_x" GROUP BY "a", "b") AS m ON s."a" = m."a" AND s."b" = m."b"'
        ' AND s."_seq" = m."_seq"'
    )
    windowed = dataclasses.replace(DUCKDB, distinct_on=False, reduce_by_join=False)
    assert windowed.reduce(LINKS, "_stg_x", "_stg_x_r") == (
        'CREATE TEMP TABLE "_stg_x_r" AS SELECT "a", "b", "_op", "_seq", "_unchanged" FROM (SELECT *,'
        ' row_number() OVER (PARTITION BY "a", "b" ORDER BY "_seq" DESC) AS "_replicator_rn" FROM "_stg_x")'
        ' AS s WHERE "_replicator_rn" = 1'
    )


def test_merge_deletes_updates_and_inserts_in_one_statement() -> None:
    assert POSTGRES.merge(ORDERS, "_stg_x") == [
        'MERGE INTO "sales"."order ""lines""" AS t USING "_stg_x" AS s ON t."id" = s."id"'
        " WHEN MATCHED AND s.\"_op\" = 'D' THEN DELETE"
        ' WHEN MATCHED THEN UPDATE SET "name" = s."name", "amount" = s."amount"'
        ' WHEN NOT MATCHED AND s."_op" <> \'D\' THEN INSERT ("id", "name", "amount")'
        ' VALUES (s."id", s."name", s."amount")'
    ]


def test_merge_keeps_the_target_value_of_unchanged_columns() -> None:
    pg, duck = (d.merge(ORDERS, "_stg_x", unchanged=["name"])[0] for d in (POSTGRES, DUCKDB))
    assert (
        ' UPDATE SET "name" = CASE WHEN \'name\' = ANY(s."_unchanged") THEN t."name" ELSE s."name" END,'
        ' "amount" = s."amount" '
    ) in pg
    assert (
        ' UPDATE SET "name" = CASE WHEN list_contains(s."_unchanged", \'name\') THEN t."name"'
        ' ELSE s."name" END, "amount" = s."amount" '
    ) in duck


def test_merge_of_a_key_only_table_has_no_update_clause() -> None:
    assert DUCKDB.merge(LINKS, "_stg_x") == [
        'MERGE INTO "app"."links" AS t USING "_stg_x" AS s ON t."a" = s."a" AND t."b" = s."b"'
        " WHEN MATCHED AND s.\"_op\" = 'D' THEN DELETE"
        ' WHEN NOT MATCHED AND s."_op" <> \'D\' THEN INSERT ("a", "b") VALUES (s."a", s."b")'
    ]


def test_merge_without_merge_statement_is_delete_update_insert() -> None:
    three = dataclasses.replace(POSTGRES, merge_statement=False)
    assert three.merge(ORDERS, "_stg_x", unchanged=["amount"]) == [
        'DELETE FROM "sales"."order ""lines""" AS t USING "_stg_x" AS s WHERE t."id" = s."id"'
        " AND s.\"_op\" = 'D'",
        'UPDATE "sales"."order ""lines""" AS t SET "name" = s."name", "amount" = CASE WHEN \'amount\''
        ' = ANY(s."_unchanged") THEN t."amount" ELSE s."amount" END FROM "_stg_x" AS s'
        ' WHERE t."id" = s."id" AND s."_op" <> \'D\'',
        'INSERT INTO "sales"."order ""lines""" ("id", "name", "amount") SELECT s."id", s."name", s."amount"'
        ' FROM "_stg_x" AS s WHERE s."_op" <> \'D\' AND NOT EXISTS (SELECT 1 FROM "sales"."order ""lines"""'
        ' AS t WHERE t."id" = s."id")',
    ]


def test_merge_refuses_a_table_without_primary_key() -> None:
    keyless = TableSchema(TableId("a", "b"), (Column.of("x", "text"),), ())
    with pytest.raises(ValueError, match="primary key"):
        POSTGRES.merge(keyless, "_stg_x")


def test_ledger_record_inserts_the_batch_and_moves_progress() -> None:
    where = 'WHERE "table_schema" = \'sales\' AND "table_name" = \'order "lines"\''
    assert POSTGRES.ledger_record(MANIFEST) == [
        'INSERT INTO "_replicator"."batches" ("batch_id", "table_schema", "table_name", "first_position",'
        ' "last_position", "rows", "inserts", "updates", "deletes", "min_commit_time", "max_commit_time",'
        " \"applied_at\") VALUES ('0123456789abcdef0123456789abcdef', 'sales', 'order \"lines\"',"
        " '0000000001', '0000000009', 9, 5, 3, 1, CAST('2024-01-01T00:00:00+00:00' AS TIMESTAMPTZ), NULL,"
        " CURRENT_TIMESTAMP)",
        'UPDATE "_replicator"."tables" SET "applied_through" = \'0000000009\', "batches" = "batches"'
        ' + 1, "rows" = "rows" + 9, "last_commit_time" = COALESCE(NULL, "last_commit_time"),'
        f' "last_applied_at" = CURRENT_TIMESTAMP {where}',
        'INSERT INTO "_replicator"."tables" ("table_schema", "table_name", "applied_through", "batches",'
        ' "rows", "last_commit_time", "last_applied_at") SELECT \'sales\', \'order "lines"\','
        " '0000000009', 1, 9, NULL, CURRENT_TIMESTAMP WHERE NOT EXISTS (SELECT 1 FROM"
        f' "_replicator"."tables" {where})',
    ]


def test_ledger_lookup_and_states() -> None:
    assert (
        DUCKDB.ledger_lookup("ab'c") == 'SELECT 1 FROM "_replicator"."batches" WHERE "batch_id" = \'ab\'\'c\''
    )
    assert POSTGRES.table_states() == (
        'SELECT "table_schema", "table_name", "applied_through", "batches", "rows", "last_commit_time",'
        ' "last_applied_at" FROM "_replicator"."tables"'
    )


def test_a_naive_commit_time_is_refused() -> None:
    naive = dataclasses.replace(MANIFEST, max_commit_time=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="time zone"):
        POSTGRES.ledger_record(naive)
