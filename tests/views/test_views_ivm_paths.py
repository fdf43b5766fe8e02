"""Property: incremental view maintenance stays equal to a full recomputation on its fallback paths, on
DuckDB and on PostgreSQL.

``IvmHook`` normally aggregates the staged rows as a batch's new images. That is wrong when the merge wrote
something else, so it must read the new images from the target instead: when an update lists columns in
``_unchanged`` (the merge kept the target's value, the staged value is stale) and when the table is
soft-delete (a deleted row stays, flagged). This file protects that safeguard: the staged values of
unchanged columns here are random, so any batch maintained from them diverges from the recomputation.
Examples per engine: ``REPLICATOR_IVM_EXAMPLES`` (default 25), as in tests/views/test_views_ivm_property.py.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.model import TableSchema
from replicator.schema import TableOptions
from replicator.views.refresh import ViewRefresher
from replicator.warehouses import DuckDBWarehouse, PostgresWarehouse, SqlWarehouse
from tests.helpers.views import DIMS, EXAMPLES, FACTS, catalog, dim_rows, fact_rows, normal
from tests.helpers.warehouse import Stager

# One change: (op, values, columns the source did not send). Deletes carry only the key; only updates
# leave columns unchanged, as in DMS and pgoutput (TOAST) output.
Change = tuple[str, dict[str, Any], list[str]]
Stream = list[tuple[TableSchema, list[Change]]]


def _changes(
    rows: st.SearchStrategy[dict[str, Any]], key: str, unchanged: st.SearchStrategy[list[str]]
) -> st.SearchStrategy[list[Change]]:
    def shape(c: tuple[str, dict[str, Any], list[str]]) -> Change:
        op, values, cols = c
        return (op, {key: values[key]} if op == "D" else values, cols if op == "U" else [])

    change = st.tuples(st.sampled_from(["I", "U", "D"]), rows, unchanged).map(shape)
    return st.lists(change, min_size=1, max_size=8)


# Columns the views read (g, d, amount, status), so a stale staged value would change a view.
fact_unchanged = st.lists(st.sampled_from(["g", "d", "amount", "status"]), unique=True, max_size=2)
streams = st.lists(
    st.one_of(
        _changes(fact_rows, "id", fact_unchanged).map(lambda c: (FACTS, c)),
        _changes(dim_rows, "d", st.just([])).map(lambda c: (DIMS, c)),
    ),
    min_size=1,
    max_size=8,
)


def check_stream(open_wh: Callable[[], SqlWarehouse], stream: Stream, dialect: str, *, soft: bool) -> None:
    """Apply ``stream`` (facts soft-delete when ``soft``); after every batch each view must equal its SQL."""
    wh = open_wh()
    folder = Path(tempfile.mkdtemp())
    try:
        if soft:
            wh.configure({FACTS.table: TableOptions(deletes="soft")})
        wh.setup()
        wh.ensure_table(FACTS)
        wh.ensure_table(DIMS)
        views = catalog()
        refresher = ViewRefresher(views, wh, by_cost=False)  # the incremental SQL itself
        refresher.start()
        assert all(r.mode == "incremental" for r in refresher.runs.values()), refresher.runs
        stager = Stager(folder)
        for schema, batch in stream:
            unchanged = {i: cols for i, (_, _, cols) in enumerate(batch) if cols}
            manifest, path = stager.batch(schema, [(op, v) for op, v, _ in batch], unchanged=unchanged)
            wh.apply(manifest, schema, path)
            for v in views.views:
                maintained = normal(wh.fetch(f"SELECT * FROM {v.name}"))
                recomputed = normal(wh.fetch(v.render(dialect)))
                assert maintained == recomputed, (str(v.name), batch, soft)
    finally:
        wh.close()
        shutil.rmtree(folder, ignore_errors=True)


def run_on(engine: str, stream: Stream, request: pytest.FixtureRequest, *, soft: bool) -> None:
    if engine == "duckdb":
        folder = tempfile.mkdtemp()
        try:
            check_stream(lambda: DuckDBWarehouse(str(Path(folder) / "w.duckdb")), stream, engine, soft=soft)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        dsn = request.getfixturevalue("pg_dsn")
        check_stream(lambda: PostgresWarehouse(dsn), stream, engine, soft=soft)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(soft=st.booleans(), stream=streams)
def test_views_over_unchanged_columns_and_soft_deletes_equal_a_full_recomputation_on_duckdb(
    soft: bool, stream: Stream
) -> None:
    folder = tempfile.mkdtemp()
    try:
        check_stream(lambda: DuckDBWarehouse(str(Path(folder) / "w.duckdb")), stream, "duckdb", soft=soft)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(soft=st.booleans(), stream=streams)
def test_views_over_unchanged_columns_and_soft_deletes_equal_a_full_recomputation_on_postgres(
    pg_dsn: str, soft: bool, stream: Stream
) -> None:
    # One database serves every example (the fixture is function-scoped): start each from empty schemas.
    reset = PostgresWarehouse(pg_dsn)
    reset.run_statements([f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in ("app", "rpt", "_replicator")])
    reset.close()
    check_stream(lambda: PostgresWarehouse(pg_dsn), stream, "postgres", soft=soft)


FACT_1 = {"id": 1, "g": 1, "d": 1, "amount": Decimal("1.50"), "status": "a"}


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_an_update_leaving_view_columns_unchanged_keeps_the_views_exact(
    engine: str, request: pytest.FixtureRequest
) -> None:
    """The staged g and amount are stale (the merge keeps 1 and 1.50): maintained from them, the views would
    move the row to group 3 with amount 9.99."""
    stale = {**FACT_1, "g": 3, "amount": Decimal("9.99"), "status": "b"}
    stream: Stream = [
        (DIMS, [("I", {"d": 1, "region": "n"}, [])]),
        (FACTS, [("I", FACT_1, [])]),
        (FACTS, [("U", stale, ["g", "amount"])]),
    ]
    run_on(engine, stream, request, soft=False)


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_a_soft_deleted_row_keeps_the_views_exact(engine: str, request: pytest.FixtureRequest) -> None:
    """A soft delete leaves the row in the table, so the recomputation still counts it; the staged delete
    carries only the key, so views maintained from it would drop the row."""
    stream: Stream = [
        (DIMS, [("I", {"d": 1, "region": "s"}, [])]),
        (FACTS, [("I", FACT_1, []), ("I", {**FACT_1, "id": 2, "g": 2}, [])]),
        (FACTS, [("D", {"id": 1}, [])]),
        (FACTS, [("I", {**FACT_1, "amount": Decimal("-2.00")}, [])]),
    ]
    run_on(engine, stream, request, soft=True)
