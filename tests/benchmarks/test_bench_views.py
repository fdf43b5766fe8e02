"""Incremental view maintenance against a full refresh, per 10k-change batch.

The base table holds ``BENCH_VIEW_ROWS`` rows (the issue's figure is 10M; the default is small so a plain
``pytest -m benchmark`` stays quick) spread over ~1000 groups; each batch updates, inserts and deletes
``BENCH_VIEW_BATCH`` keys.

- Incremental: the wall time of the view's merge hook (``before_merge`` + ``after_merge``: everything view
  maintenance adds to the merge transaction), timed around the hook calls. As a cross-check the same batch
  is merged into an identical table no view reads, and the difference of the two merges is printed too
  (noisier: it subtracts two sub-second merges of random keys), with its own ratio. On PostgreSQL that
  difference is the fairer figure: there the merge statement itself copies the touched rows' old images
  for the hook (``Dialect.merge(old_images=...)``), work the hook's timer does not see.
- Full: the refresh the replicator runs for the same SQL when it is not maintained incrementally
  (``FULL_VIEW_SQL``: ``REFRESH MATERIALIZED VIEW`` in PostgreSQL, ``CREATE OR REPLACE TABLE`` in DuckDB),
  in its own transaction, commit included. After each batch both views must hold the same rows.

Run: ``BENCH_VIEW_ROWS=10000000 pytest -m benchmark tests/benchmarks/test_bench_views.py -s``.
"""

from __future__ import annotations

import os
import random
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from replicator.model import Column, TableId, TableSchema
from replicator.views import FULL_VIEW_SQL, ViewRefresher, order_views, parse_view
from replicator.warehouses import DuckDBWarehouse, PostgresWarehouse, SqlWarehouse
from tests.helpers.warehouse import Stager

pytestmark = pytest.mark.benchmark

ROWS = int(os.environ.get("BENCH_VIEW_ROWS", "200000"))
BATCH = int(os.environ.get("BENCH_VIEW_BATCH", "10000"))
BATCHES = int(os.environ.get("BENCH_VIEW_BATCHES", "5"))

FACTS = TableSchema(
    TableId("bench", "facts"),
    (
        Column.of("id", "bigint", nullable=False),
        Column.of("grp", "integer", nullable=False),
        Column.of("amount", "numeric(12,2)"),
        Column.of("status", "text"),
    ),
    ("id",),
)
SQL = (
    "SELECT f.grp, SUM(f.amount) AS total, COUNT(*) AS n, AVG(f.amount) AS mean"
    " FROM bench.facts AS f WHERE f.status = 'ok' GROUP BY f.grp"
)
VIEW = parse_view(TableId("rpt", "totals"), SQL)
FULL = parse_view(TableId("rpt", "totals_full"), SQL)  # the same view, refreshed in full


PLAIN = TableSchema(TableId("plain", "facts"), FACTS.columns, FACTS.primary_key)  # same data, no view


def _fill(wh: SqlWarehouse, engine: str, table: TableSchema) -> None:
    series = f"range(1, {ROWS + 1})" if engine == "duckdb" else f"generate_series(1, {ROWS})"
    name = f"{table.table.schema}.{table.table.name}"
    wh.run_statements(
        [
            f"INSERT INTO {name} SELECT i, i % 1000, CAST((i % 10000) / 100.0 AS DECIMAL(12,2)),"
            f" CASE WHEN i % 7 = 0 THEN 'void' ELSE 'ok' END FROM {series} AS t(i)"
        ]
    )
    if engine == "postgres":
        wh.run_statements([f"ANALYZE {name}"])


class TimedHook:
    """Delegates to a merge hook and adds up the wall time spent in it."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self.seconds = 0.0
        self.phases: dict[str, float] = {}  # seconds per hook method, summed

    def _timed(self, name: str, ctx: Any) -> None:
        started = time.perf_counter()
        getattr(self.hook, name)(ctx)
        seconds = time.perf_counter() - started
        self.seconds += seconds
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def before_merge(self, ctx: Any) -> None:
        self._timed("before_merge", ctx)

    def after_merge(self, ctx: Any) -> None:
        self._timed("after_merge", ctx)

    def after_truncate(self, ctx: Any) -> None:
        self._timed("after_truncate", ctx)

    def wants_old_images(self, ctx: Any) -> bool:
        # Forwarded, or the warehouse would not offer the hook the merge's copy of old images.
        return bool(getattr(self.hook, "wants_old_images", lambda _: False)(ctx))


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _changes(rng: random.Random, next_id: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for i, k in enumerate(rng.sample(range(1, ROWS + 1), BATCH)):
        if i % 10 == 0:
            out.append(("D", {"id": k}))
        else:
            amount = Decimal(rng.randrange(10000)) / 100
            out.append(("U", {"id": k, "grp": rng.randrange(1000), "amount": amount, "status": "ok"}))
    inserts = BATCH // 10
    out += [
        ("I", {"id": next_id + i, "grp": i % 1000, "amount": Decimal(1), "status": "ok"})
        for i in range(inserts)
    ]
    return out


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_incremental_maintenance_is_much_faster_than_a_full_refresh(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if engine == "duckdb":
        wh: SqlWarehouse = DuckDBWarehouse(str(tmp_path / "bench.duckdb"))
    else:
        wh = PostgresWarehouse(request.getfixturevalue("pg_dsn"))
    rng = random.Random(7)
    stager = Stager(tmp_path)
    try:
        wh.setup()
        for table in (FACTS, PLAIN):
            wh.ensure_table(table)
            _fill(wh, engine, table)
        started = time.perf_counter()
        refresher = ViewRefresher(order_views([VIEW], {FACTS.table, PLAIN.table}), wh)
        refresher.start()
        created = time.perf_counter() - started
        assert refresher.runs[VIEW.name].mode == "incremental"
        timed = [TimedHook(h) for h in wh.hooks]
        wh.hooks = tuple(timed)
        full_sql = FULL_VIEW_SQL[engine]
        wh.run_statements(full_sql.create(FULL))
        hook, difference, full, merge_only, chosen = [], [], [], [], []
        for b in range(BATCHES):
            changes = _changes(rng, ROWS + 1 + b * BATCH)
            manifest, path = stager.batch(PLAIN, changes)
            t = time.perf_counter()
            wh.apply(manifest, PLAIN, path)  # the same merge, no view reads this table
            merge_only.append(time.perf_counter() - t)
            manifest, path = stager.batch(FACTS, changes)
            before = sum(h.seconds for h in timed)
            t = time.perf_counter()
            wh.apply(manifest, FACTS, path)
            difference.append(time.perf_counter() - t - merge_only[-1])
            hook.append(sum(h.seconds for h in timed) - before)
            chosen.append("R" if refresher.runs[VIEW.name].reason else "I")  # recomputed or incremental
            t = time.perf_counter()
            wh.run_statements(full_sql.refresh(FULL))
            full.append(time.perf_counter() - t)
            maintained = sorted(wh.fetch(f"SELECT grp, total, n FROM {VIEW.name}"))
            assert maintained == sorted(wh.fetch(f"SELECT grp, total, n FROM {FULL.name}"))
        inc, fl, diff = _median(hook), _median(full), _median(difference)
        print(
            f"\n[{engine}] base rows={ROWS:,}, batch={BATCH:,} changes (+{BATCH // 10:,} inserts), medians of"
            f" {BATCHES}: view created in {created:.2f} s; merge alone {_median(merge_only):.3f} s;"
            f" incremental view update {inc:.4f} s (merge difference {diff:.4f} s);"
            f" full refresh {fl:.4f} s; full/incremental = {fl / inc:.1f}x"
            f" (full/merge difference = {f'{fl / diff:.1f}x' if diff > 0 else 'n/a: difference <= 0, noise'})"
            f"\n[{engine}] per batch: maintained (I incremental, R recomputed: chosen by measured cost)"
            f" {' '.join(f'{c} {x:.4f}' for c, x in zip(chosen, hook, strict=True))};"
            f" full {' '.join(f'{x:.4f}' for x in full)};"
            f" hook totals by phase {[{k: round(v, 3) for k, v in h.phases.items()} for h in timed]}"
        )
    finally:
        wh.close()
