"""Property: after every batch, each incrementally maintained view equals a full recomputation of its SQL
from the base tables, on DuckDB and on PostgreSQL.

Random change streams over a fact table and a dimension table it joins: inserts, updates that move rows
between groups (and to NULL keys / NULL amounts), deletes, several changes of one key in one batch, changes
to the dimension (which move every joined fact), and whole-table TRUNCATEs. Examples per engine:
``REPLICATOR_IVM_EXAMPLES`` (default 25).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.model import Column, TableId, TableSchema
from replicator.views.graph import ViewCatalog, order_views, parse_view
from replicator.views.refresh import ViewRefresher
from replicator.warehouses import DuckDBWarehouse, PostgresWarehouse, SqlWarehouse
from tests.warehouses.test_warehouse_conformance import Stager

EXAMPLES = int(os.environ.get("REPLICATOR_IVM_EXAMPLES", "25"))

FACTS = TableSchema(
    TableId("app", "facts"),
    (
        Column.of("id", "bigint", nullable=False),
        Column.of("g", "integer"),
        Column.of("d", "bigint"),
        Column.of("amount", "numeric(12,2)"),
        Column.of("status", "text"),
    ),
    ("id",),
)
DIMS = TableSchema(
    TableId("app", "dims"), (Column.of("d", "bigint", nullable=False), Column.of("region", "text")), ("d",)
)
VIEWS = {
    "rpt.by_group": """
        SELECT f.g, f.status, SUM(f.amount) AS total, COUNT(*) AS n, COUNT(f.amount) AS n_amount,
               AVG(f.amount) AS avg_amount
        FROM app.facts AS f WHERE f.status <> 'void' GROUP BY f.g, f.status""",
    "rpt.by_region": """
        SELECT d.region, f.g % 2 AS parity, SUM(f.amount * 2) AS doubled, COUNT(*) AS n
        FROM app.facts AS f JOIN app.dims AS d ON d.d = f.d GROUP BY d.region, f.g % 2""",
}


def catalog() -> ViewCatalog:
    views = [parse_view(TableId.parse(n), sql) for n, sql in VIEWS.items()]
    return order_views(views, {FACTS.table, DIMS.table})


amounts = st.one_of(st.none(), st.integers(-500, 500).map(lambda c: Decimal(c) / 100))
fact_rows = st.fixed_dictionaries(
    {
        "id": st.integers(1, 10),
        "g": st.one_of(st.none(), st.integers(1, 3)),
        "d": st.integers(1, 4),
        "amount": amounts,
        "status": st.sampled_from(["a", "b", "void"]),
    }
)
dim_rows = st.fixed_dictionaries(
    {"d": st.integers(1, 4), "region": st.one_of(st.none(), st.sampled_from(["n", "s"]))}
)


def changes(rows: st.SearchStrategy[dict[str, Any]], key: str) -> st.SearchStrategy[list[tuple[str, Any]]]:
    change = st.tuples(st.sampled_from(["I", "U", "D"]), rows).map(
        lambda c: (c[0], {key: c[1][key]} if c[0] == "D" else c[1])
    )
    return st.lists(change, min_size=1, max_size=8)


batches = st.lists(
    st.one_of(
        changes(fact_rows, "id").map(lambda c: (FACTS, c)),
        changes(dim_rows, "d").map(lambda c: (DIMS, c)),
        st.just((FACTS, [("T", {})])),
    ),
    min_size=1,
    max_size=8,
)


def normal(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows comparable across the two computations: floats (DuckDB's AVG) to 9 places, Decimals by value."""

    def v(x: Any) -> Any:
        if isinstance(x, float):
            return round(x, 9)
        if isinstance(x, Decimal):
            return round(float(x), 9)
        return x

    return sorted((tuple(v(x) for x in r) for r in rows), key=repr)


def check_stream(open_wh: Callable[[], SqlWarehouse], stream: list[Any], dialect: str) -> None:
    wh = open_wh()
    folder = Path(tempfile.mkdtemp())
    try:
        wh.setup()
        wh.ensure_table(FACTS)
        wh.ensure_table(DIMS)
        views = catalog()
        refresher = ViewRefresher(views, wh)
        refresher.start()
        assert all(r.mode == "incremental" for r in refresher.runs.values()), refresher.runs
        stager = Stager(folder)
        for schema, batch in stream:
            manifest, path = stager.batch(schema, batch)
            wh.apply(manifest, schema, path)
            for v in views.views:
                maintained = normal(wh.fetch(f"SELECT * FROM {v.name}"))
                recomputed = normal(wh.fetch(v.render(dialect)))
                assert maintained == recomputed, (str(v.name), batch)
    finally:
        wh.close()
        shutil.rmtree(folder, ignore_errors=True)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=batches)
def test_incremental_views_equal_a_full_recomputation_on_duckdb(stream: list[Any]) -> None:
    folder = tempfile.mkdtemp()
    try:
        check_stream(lambda: DuckDBWarehouse(str(Path(folder) / "w.duckdb")), stream, "duckdb")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=batches)
def test_incremental_views_equal_a_full_recomputation_on_postgres(pg_dsn: str, stream: list[Any]) -> None:
    reset = PostgresWarehouse(pg_dsn)
    reset.run_statements([f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in ("app", "rpt", "_replicator")])
    reset.close()
    check_stream(lambda: PostgresWarehouse(pg_dsn), stream, "postgres")


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_a_view_grouped_by_an_expression_over_a_join_is_maintained(engine: str, request: Any) -> None:
    """One fixed stream touching both tables, so a plain run shows the mechanism without hypothesis."""
    stream = [
        (DIMS, [("I", {"d": 1, "region": "n"}), ("I", {"d": 2, "region": None})]),
        (FACTS, [("I", {"id": 1, "g": 1, "d": 1, "amount": Decimal("1.50"), "status": "a"})]),
        (FACTS, [("I", {"id": 2, "g": None, "d": 2, "amount": None, "status": "b"})]),
        (DIMS, [("U", {"d": 2, "region": "n"})]),
        (
            FACTS,
            [("U", {"id": 1, "g": 2, "d": 2, "amount": Decimal("3.00"), "status": "a"}), ("D", {"id": 2})],
        ),
        (FACTS, [("T", {})]),
        (FACTS, [("I", {"id": 3, "g": 3, "d": 1, "amount": Decimal("-1.25"), "status": "a"})]),
    ]
    if engine == "duckdb":
        folder = tempfile.mkdtemp()
        check_stream(lambda: DuckDBWarehouse(str(Path(folder) / "w.duckdb")), stream, "duckdb")
        shutil.rmtree(folder, ignore_errors=True)
    else:
        dsn = request.getfixturevalue("pg_dsn")
        check_stream(lambda: PostgresWarehouse(dsn), stream, "postgres")
