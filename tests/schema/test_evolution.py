"""Schema evolution: the pure type comparison, and a column added at the source mid-stream landing in every
warehouse through the real pipeline (stage -> Parquet -> merge) without a restart; an incompatible change
stops only its table, with the reason in ``replicator status``."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import Column, Op, Position, SchemaChange, TableId, TableSchema
from replicator.ops import status as status_mod
from replicator.pipeline import Pipeline
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.values import LogicalType, parse_type
from replicator.warehouses import DUCKDB, POSTGRES
from replicator.warehouses.evolution import compare, diff
from tests.helpers.scripted import ScriptedSource, change
from tests.helpers.warehouse import Target, query

T = parse_type


@pytest.mark.parametrize(
    ("old", "new", "verdict", "result"),
    [
        ("integer", "integer", "same", "integer"),
        ("integer", "bigint", "widen", "bigint"),
        ("bigint", "smallint", "fits", "bigint"),
        ("real", "double", "widen", "double"),
        ("varchar(10)", "varchar(40)", "widen", "varchar(40)"),
        ("varchar(40)", "varchar(10)", "fits", "varchar(40)"),
        ("varchar(10)", "text", "widen", "text"),
        ("text", "varchar(10)", "fits", "text"),
        ("char(2)", "varchar(9)", "widen", "varchar(9)"),
        ("numeric(6,2)", "numeric(14,4)", "widen", "numeric(14,4)"),
        ("numeric(6,2)", "numeric(6,4)", "widen", "numeric(8,4)"),  # keep 4 integer digits and 4 decimals
        ("numeric(10,2)", "numeric(5,1)", "fits", "numeric(10,2)"),
        ("numeric(38,0)", "numeric(38,10)", "incompatible", "numeric(38,10)"),  # 48 digits do not exist
        ("numeric(12,2)", "numeric", "widen", "numeric"),
        ("text", "integer", "incompatible", "integer"),
        ("timestamp", "timestamptz", "incompatible", "timestamptz"),
        ("integer", "numeric(12,2)", "incompatible", "numeric(12,2)"),
    ],
)
def test_how_a_batch_column_goes_into_the_target_column(
    old: str, new: str, verdict: str, result: str
) -> None:
    assert compare(T(old), T(new)) == (verdict, T(result))


def test_a_diff_adds_widens_keeps_dropped_and_records_the_union() -> None:
    current = (
        Column.of("id", "integer", nullable=False),
        Column.of("a", "varchar(5)"),
        Column.of("b", "text"),
    )
    wanted = TableSchema(
        TableId("s", "t"),
        (Column.of("id", "bigint", nullable=False), Column.of("a", "varchar(3)"), Column.of("c", "date")),
        ("id",),
    )
    plan = diff(current, wanted, POSTGRES)
    assert plan.add == (Column.of("c", "date"),)
    assert plan.widen == ((current[0], Column("id", LogicalType("bigint"), False)),)
    assert (plan.incompatible, plan.dropped) == ((), ("b",))
    assert [str(c.type) for c in plan.record] == ["bigint", "varchar(5)", "text", "date"]
    # DuckDB has no VARCHAR lengths: a longer varchar changes no DDL, only the record.
    duck = diff(
        (Column.of("a", "varchar(5)"),),
        TableSchema(TableId("s", "t"), (Column.of("a", "varchar(9)"),), ()),
        DUCKDB,
    )
    assert (duck.widen, [str(c.type) for c in duck.record]) == ((), ["varchar(9)"])


# -- end to end: pipeline, stage and merge ---------------------------------------------------------------

PATIENTS = TableSchema(
    TableId("dbo", "patients"),
    (Column.of("patient_id", "bigint", nullable=False), Column.of("last_name", "nvarchar(80)")),
    ("patient_id",),
)
CLAIMS = TableSchema(
    TableId("dbo", "claims"),
    (Column.of("claim_id", "bigint", nullable=False), Column.of("amount", "numeric(12,2)")),
    ("claim_id",),
)


def test_a_column_added_at_the_source_mid_stream_lands_in_every_warehouse_without_a_restart(
    target: Target,
    tmp_path: Path,
) -> None:
    wh = target.open()
    source = ScriptedSource([PATIENTS, CLAIMS])
    store = LocalStore(tmp_path / "staging")
    stager = Stager(store, Quarantine(store))
    pipeline = Pipeline(
        source=source, stager=stager, warehouse=wh, schemas={PATIENTS.table: PATIENTS, CLAIMS.table: CLAIMS},
        batch=BatchConfig(), settings=PipelineConfig(poll_interval_seconds=0),
    )  # fmt: skip
    stop = threading.Event()
    pipeline.start()
    p, c = PATIENTS.table, CLAIMS.table
    source.script = [change(p, Op.INSERT, "1", "Ng"), change(c, Op.INSERT, "10", "5.00")]
    pipeline.run(stop, once=True)
    wider = TableSchema(p, (*PATIENTS.columns, Column.of("email", "varchar(254)")), PATIENTS.primary_key)
    retyped = TableSchema(c, (CLAIMS.columns[0], Column.of("amount", "timestamptz")), CLAIMS.primary_key)
    source.script = [
        change(p, Op.UPDATE, "1", "Ng"),  # staged in the old shape, cut before the schema change
        SchemaChange(p, wider, Position("00005000")),
        change(p, Op.UPDATE, "1", "Ng", "ng@example.org"),
        change(p, Op.INSERT, "2", "Okafor", None),
        SchemaChange(c, retyped, Position("00005001")),
        change(c, Op.UPDATE, "10", "2024-05-01 00:00:00+00"),
    ]
    pipeline.run(stop, once=True)
    assert query(wh, 'SELECT "patient_id", "last_name", "email" FROM "dbo"."patients" ORDER BY 1') == [
        (1, "Ng", "ng@example.org"),
        (2, "Okafor", None),
    ]
    # The claims table is stopped with its reason, its batch waits in staging; patients went on.
    assert query(wh, 'SELECT "claim_id", "amount" FROM "dbo"."claims"') == [(10, pytest.approx(5))]
    assert "column amount changed from numeric(12,2) to timestamptz" in pipeline.errors[c]
    rows = {r.table: r for r in status_mod.collect([p, c], stager, wh)}
    assert rows["dbo.claims"].error is not None and "numeric(12,2) to timestamptz" in rows["dbo.claims"].error
    assert (rows["dbo.claims"].backlog_batches, rows["dbo.patients"].error) == (1, None)
    assert "STOPPED dbo.claims: dbo.claims: column amount changed" in status_mod.to_text(list(rows.values()))
    wh.close()
