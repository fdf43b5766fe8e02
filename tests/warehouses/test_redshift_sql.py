"""Redshift SQL: golden text, a sqlglot parse (read="redshift") of every statement the warehouse can send,
and a check that every MERGE is in the one form Redshift accepts.

PostgreSQL, DuckDB and sqlglot all accept MERGE forms Redshift rejects (conditional WHEN clauses, a
target alias, a query as the source), so ``redshift_merge_problems`` checks the form itself; the test that
it rejects the PostgreSQL dialect's MERGE proves it can fail.
"""

from __future__ import annotations

import itertools

import pytest
import sqlglot
from sqlglot import exp

from replicator.model import Column, TableSchema
from replicator.schema import RedshiftLayout
from replicator.values import KINDS, parse_type
from replicator.warehouses import evolution
from replicator.warehouses.dialect import Dialect
from replicator.warehouses.postgres import POSTGRES
from replicator.warehouses.redshift import REDSHIFT, REDSHIFT_DELETE_INSERT, copy_parquet, layout
from tests.helpers.sql_examples import LINKS, manifest, orders

ORDERS = orders(Column.of("doc", "json"))
MANIFEST = manifest(ORDERS.table, data_key="batches/sales.orders/30-0123.parquet")


def redshift_merge_problems(sql: str) -> list[str]:
    """Why Redshift would refuse this MERGE (empty: the accepted form). See DESIGN.md "Targets"."""
    tree = sqlglot.parse_one(sql, read="redshift")
    if not isinstance(tree, exp.Merge):
        return []
    problems = []
    if tree.this.args.get("alias"):
        problems.append("the target has an alias")
    if not isinstance(tree.args["using"], exp.Table):
        problems.append("the source is not a table")
    whens = tree.args["whens"].expressions
    matched = [w for w in whens if w.args.get("matched")]
    not_matched = [w for w in whens if not w.args.get("matched")]
    if len(matched) != 1 or len(not_matched) != 1:
        problems.append(f"{len(matched)} WHEN MATCHED and {len(not_matched)} WHEN NOT MATCHED clauses")
    problems += ["a WHEN clause has a condition" for w in whens if w.args.get("condition") is not None]
    if (
        matched
        and not isinstance(matched[0].args["then"], exp.Update)
        and str(matched[0].args["then"]) != "DELETE"
    ):
        problems.append("WHEN MATCHED does neither UPDATE nor DELETE")
    if not_matched and not isinstance(not_matched[0].args["then"], exp.Insert):
        problems.append("WHEN NOT MATCHED does not INSERT")
    return problems


def every_statement(dialect: Dialect) -> list[str]:
    """Every statement the Redshift warehouse can send, across the options that change the SQL."""
    out = [*dialect.setup(), *evolution.setup(dialect), dialect.list_leftover_staging()]
    for schema in (ORDERS, LINKS):
        for soft, unchanged, nulls in itertools.product((False, True), ((), ("name",)), ((), ("gone",))):
            out += dialect.merge(schema, "_stg_x", unchanged=unchanged, soft_delete=soft, nulls=nulls)
        out += dialect.create_table(schema, soft_delete=True)
        out += [dialect.create_staging(schema, "_stg_x"), dialect.reduce(schema, "_stg_x", "_stg_x_r")]
        out += [dialect.create_staging(schema, "_stg_x", moves=True)]
        out += [dialect.reduce(schema, "_stg_x", "_stg_x_r", moves=True)]
        out += [dialect.fill_moved(schema, "_stg_x", schema.column_names[1:])]
    out += [dialect.count_ops("_stg_x_r"), dialect.ledger_lookup("b"), *dialect.ledger_record(MANIFEST)]
    out += [dialect.table_states(), dialect.progress_exists(), dialect.drop_table("_stg_x")]
    out += [evolution.add_column(dialect, ORDERS.table, Column.of("email", "varchar(254)"))]
    out += [evolution.alter_column(dialect, ORDERS.table, Column.of("name", "varchar(200)"))]
    out += [*evolution.write_record(ORDERS.table, ORDERS.columns), evolution.read_record(ORDERS.table)]
    out += [*evolution.record_error(dialect, ORDERS.table, "it's broken"), evolution.read_errors()]
    out += [
        copy_parquet("_stg_x", "s3://bucket/prefix/k.parquet", "arn:aws:iam::1:role/r", region="eu-west-1")
    ]
    return out


@pytest.mark.parametrize("dialect", [REDSHIFT, REDSHIFT_DELETE_INSERT], ids=["merge", "delete_insert"])
def test_every_redshift_statement_parses_as_redshift(dialect: Dialect) -> None:
    for sql in every_statement(dialect):
        tree = sqlglot.parse_one(sql, read="redshift")
        assert not isinstance(tree, exp.Command), f"sqlglot could not parse: {sql}"
    lock = REDSHIFT.lock_target
    assert lock is not None
    # LOCK is outside sqlglot's grammar (it falls back to a raw command); its text is pinned instead.
    assert lock.format(table='"s"."t"') == 'LOCK "_replicator"."batches", "_replicator"."tables", "s"."t"'


@pytest.mark.parametrize("dialect", [REDSHIFT, REDSHIFT_DELETE_INSERT], ids=["merge", "delete_insert"])
def test_every_merge_redshift_can_be_sent_is_in_the_form_redshift_accepts(dialect: Dialect) -> None:
    merges = [s for s in every_statement(dialect) if s.startswith("MERGE")]
    assert bool(merges) == dialect.merge_statement
    for sql in merges:
        assert redshift_merge_problems(sql) == [], sql


def test_the_form_check_rejects_the_merges_postgresql_accepts() -> None:
    (pg,) = POSTGRES.merge(ORDERS, "_stg_x")
    assert redshift_merge_problems(pg) == [
        "the target has an alias",
        "2 WHEN MATCHED and 1 WHEN NOT MATCHED clauses",
        "a WHEN clause has a condition",
        "a WHEN clause has a condition",
    ]


def test_the_merge_deletes_first_then_upserts_from_a_table_of_its_own() -> None:
    t, s, u = '"sales"."order ""lines"""', '"_stg_x"', '"_stg_x_u"'
    assert REDSHIFT.merge(ORDERS, "_stg_x") == [
        f'DELETE FROM {t} USING {s} WHERE {t}."id" = {s}."id" AND {s}."_op" = \'D\'',
        f"CREATE TEMP TABLE {u} AS SELECT * FROM {s} WHERE \"_op\" <> 'D'",
        f'MERGE INTO {t} USING {u} ON {t}."id" = {u}."id" WHEN MATCHED THEN UPDATE SET "name" = {u}."name",'
        f' "amount" = {u}."amount", "doc" = {u}."doc" WHEN NOT MATCHED THEN INSERT ("id", "name", "amount",'
        f' "doc") VALUES ({u}."id", {u}."name", {u}."amount", {u}."doc")',
        f"DROP TABLE IF EXISTS {u}",
    ]


def test_unchanged_columns_are_matched_in_the_serialized_super_array() -> None:
    merge = REDSHIFT.merge(ORDERS, "_stg_x", unchanged=["name"])[2]
    assert (
        "\"name\" = CASE WHEN strpos(',' || btrim(json_serialize(\"_stg_x_u\".\"_unchanged\"), '[]') || ',',"
        ' \',"name",\') > 0 THEN "sales"."order ""lines"""."name" ELSE "_stg_x_u"."name" END'
    ) in merge


def test_a_key_only_table_still_has_its_one_when_matched_clause() -> None:
    merge = REDSHIFT.merge(LINKS, "_stg_x")[2]
    assert ' WHEN MATCHED THEN UPDATE SET "a" = "_stg_x_u"."a" WHEN NOT MATCHED THEN INSERT' in merge


def test_soft_deletes_mark_instead_of_delete() -> None:
    first = REDSHIFT.merge(LINKS, "_stg_x", soft_delete=True)[0]
    assert first == (
        'UPDATE "app"."links" SET "_deleted" = TRUE, "_deleted_at" = SYSDATE FROM "_stg_x" WHERE'
        ' "app"."links"."a" = "_stg_x"."a" AND "app"."links"."b" = "_stg_x"."b" AND "_stg_x"."_op" = \'D\''
    )


def test_staging_matches_the_staged_file_column_by_column() -> None:
    from replicator.stage import arrow_schema

    assert REDSHIFT.staging_columns(ORDERS) == tuple(arrow_schema(ORDERS).names)
    assert REDSHIFT.create_staging(ORDERS, "_stg_x") == (
        'CREATE TEMP TABLE "_stg_x" ("id" BIGINT, "name" VARCHAR(320), "amount" DECIMAL(12,2), "doc" SUPER,'
        ' "_op" VARCHAR(65535), "_seq" BIGINT, "_pos" VARCHAR(65535), "_commit_time" TIMESTAMPTZ,'
        ' "_unchanged" SUPER)'
    )


def test_copy_reads_parquet_from_s3_with_the_iam_role() -> None:
    assert copy_parquet("_stg_x", "s3://b/p/k.parquet", "arn:aws:iam::1:role/r") == (
        "COPY \"_stg_x\" FROM 's3://b/p/k.parquet' IAM_ROLE 'arn:aws:iam::1:role/r' FORMAT AS PARQUET"
        " SERIALIZETOJSON"
    )
    with pytest.raises(ValueError, match="S3 only"):
        copy_parquet("_stg_x", "/tmp/k.parquet", "arn")


@pytest.mark.parametrize(
    ("logical", "ddl"),
    [
        ("varchar(80)", "VARCHAR(320)"),  # 80 characters of up to 4 UTF-8 bytes
        ("varchar(20000)", "VARCHAR(65535)"),  # capped
        ("nvarchar(max)", "VARCHAR(65535)"),
        ("char(3)", "VARCHAR(12)"),  # Redshift CHAR is single-byte only
        ("text", "VARCHAR(65535)"),
        ("json", "SUPER"),
        ("jsonb", "SUPER"),
        ("bytea", "VARBYTE(1024000)"),
        ("numeric(12,2)", "DECIMAL(12,2)"),
        ("numeric", "VARCHAR(1024)"),
        ("uuid", "VARCHAR(36)"),
        ("timestamptz", "TIMESTAMPTZ"),
        ("double precision", "DOUBLE PRECISION"),
    ],
)
def test_redshift_types(logical: str, ddl: str) -> None:
    assert REDSHIFT.column_type(parse_type(logical)) == ddl


def test_the_redshift_type_map_covers_every_kind() -> None:
    assert set(REDSHIFT.types) == set(KINDS)


def test_layout_from_the_table_toml_becomes_distkey_sortkey_and_encodings() -> None:
    spec = RedshiftLayout(distkey="id", sortkey=("amount", "id"), encode=(("name", "zstd"),))
    encodings, suffix = layout(ORDERS.columns, spec)
    assert (encodings, suffix) == (
        {"name": "ENCODE ZSTD"},
        ' DISTSTYLE KEY DISTKEY ("id") SORTKEY ("amount", "id")',
    )
    create = REDSHIFT.create_table(ORDERS, column_suffix=encodings, table_suffix=suffix)[1]
    assert create == (
        'CREATE TABLE IF NOT EXISTS "sales"."order ""lines""" ("id" BIGINT NOT NULL, "name" VARCHAR(320)'
        ' ENCODE ZSTD, "amount" DECIMAL(12,2), "doc" SUPER, PRIMARY KEY ("id"))'
        ' DISTSTYLE KEY DISTKEY ("id") SORTKEY ("amount", "id")'
    )
    assert not isinstance(sqlglot.parse_one(create, read="redshift"), exp.Command)


def test_only_varchar_lengths_widen_in_place_and_alter_commits_on_its_own() -> None:
    assert REDSHIFT.alter_commits
    assert evolution.alter_column(REDSHIFT, ORDERS.table, Column.of("name", "varchar(200)")) == (
        'ALTER TABLE "sales"."order ""lines""" ALTER COLUMN "name" TYPE VARCHAR(800)'
    )
    plan = evolution.diff(ORDERS.columns, _replace(ORDERS, "amount", "numeric(20,2)"), REDSHIFT)
    assert plan.incompatible == (
        "column amount widened from numeric(12,2) to numeric(20,2), which redshift cannot do in place"
        " (ALTER COLUMN TYPE)",
    )


def _replace(schema: TableSchema, name: str, type_text: str) -> TableSchema:
    cols = tuple(Column.of(c.name, type_text) if c.name == name else c for c in schema.columns)
    return TableSchema(schema.table, cols, schema.primary_key)


def test_ledger_rows_use_sysdate() -> None:
    statements = REDSHIFT.ledger_record(MANIFEST)
    assert all("CURRENT_TIMESTAMP" not in s for s in statements)
    assert statements[0].endswith("NULL, SYSDATE)")


def test_connection_parameters_for_password_provisioned_iam_and_serverless() -> None:
    from replicator.warehouses.redshift import RedshiftAuth, connect_kwargs

    base = {"database": "dev", "port": 5439, "ssl": True, "timeout": 10, "application_name": "replicator"}
    assert connect_kwargs(RedshiftAuth(host="h", user="u", password="p")) == {
        **base, "host": "h", "user": "u", "password": "p"
    }  # fmt: skip
    assert connect_kwargs(RedshiftAuth(iam=True, user="u", cluster_identifier="c", region="eu-west-1")) == {
        **base, "iam": True, "region": "eu-west-1", "db_user": "u", "cluster_identifier": "c"
    }  # fmt: skip
    assert connect_kwargs(RedshiftAuth(iam=True, workgroup="wg", region="eu-west-1")) == {
        **base, "iam": True, "region": "eu-west-1", "is_serverless": True, "serverless_work_group": "wg"
    }  # fmt: skip
    with pytest.raises(ValueError, match="cluster_identifier"):
        connect_kwargs(RedshiftAuth(iam=True))
    assert "p" not in repr(RedshiftAuth(host="h", user="u", password="p")).replace("host", "")


def test_redshift_config_needs_s3_staging_and_a_copy_role() -> None:
    from replicator.config import load, validate

    env = {"REPLICATOR__WAREHOUSE__KIND": "redshift", "REPLICATOR__STAGING__PATH": "local"}
    cfg = load(None, {**env, "REPLICATOR__SOURCE__PATH": "s3://dms/folder"})
    assert validate(cfg) == [
        "staging.path: Redshift COPYs staged batches from S3 (s3://bucket/prefix)",
        "warehouse.iam_role: required for redshift (the role COPY uses to read staging)",
    ]
