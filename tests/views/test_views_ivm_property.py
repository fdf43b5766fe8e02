"""Property: after every batch, each incrementally maintained view equals a full recomputation of its SQL
from the base tables, on DuckDB and on PostgreSQL.

Random change streams over a fact table and a dimension table it joins: inserts, updates that move rows
between groups (and to NULL keys / NULL amounts), deletes, several changes of one key in one batch, changes
to the dimension (which move every joined fact), and whole-table TRUNCATEs. Examples per engine:
``REPLICATOR_IVM_EXAMPLES`` (default 25).
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

from replicator.views.refresh import ViewRefresher
from replicator.warehouses import DuckDBWarehouse, PostgresWarehouse, SqlWarehouse
from tests.helpers.views import DIMS, EXAMPLES, FACTS, batches, catalog, normal
from tests.helpers.warehouse import Stager


def check_stream(open_wh: Callable[[], SqlWarehouse], stream: list[Any], dialect: str) -> None:
    wh = open_wh()
    folder = Path(tempfile.mkdtemp())
    try:
        wh.setup()
        wh.ensure_table(FACTS)
        wh.ensure_table(DIMS)
        views = catalog()
        refresher = ViewRefresher(views, wh, by_cost=False)  # the incremental SQL itself
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
