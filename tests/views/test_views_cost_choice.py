"""Per view and batch, an incrementally maintained view is recomputed instead when that is measured to be
cheaper (issue 16: the incremental path must never be slower than a full refresh), and status says why."""

from __future__ import annotations

import shutil
import tempfile
from collections import deque
from pathlib import Path

from replicator.views.ivm_hook import EXPLORE_SECONDS, Costs
from replicator.views.refresh import ViewRefresher
from replicator.warehouses import DuckDBWarehouse
from tests.helpers.views import DIMS, FACTS, catalog, normal
from tests.helpers.warehouse import Stager


def test_the_estimate_is_a_line_through_the_measured_batches() -> None:
    costs = Costs(runs=deque([(10, 0.011), (100, 0.02), (100, 0.02)]), recompute=0.05)
    estimate = costs.incremental(1000)
    assert estimate is not None and abs(estimate - 0.11) < 1e-9  # 0.01 fixed + 0.0001 per row
    assert costs.choose(10)[0] == "incremental"
    mode, why = costs.choose(1000)
    assert mode == "recompute" and "0.110 s > recompute 0.050 s" in why


def test_a_recompute_is_measured_once_the_incremental_path_would_matter() -> None:
    assert Costs().choose(10**6) == ("incremental", "not measured yet")
    small = Costs(runs=deque([(10, EXPLORE_SECONDS / 100)]))
    assert small.choose(10)[0] == "incremental"
    assert small.choose(1000)[0] == "recompute"  # 1000 rows: estimated at the threshold: measure it
    small.measured("recompute", 0.5, 1000)
    assert small.choose(1000)[0] == "incremental"  # a measured recompute of 0.5 s loses


def test_a_batch_too_large_for_the_incremental_path_is_recomputed_and_status_says_why() -> None:
    folder = Path(tempfile.mkdtemp())
    wh = DuckDBWarehouse(str(folder / "w.duckdb"))
    try:
        wh.setup()
        wh.ensure_table(FACTS)
        wh.ensure_table(DIMS)
        views = catalog()
        refresher = ViewRefresher(views, wh)
        refresher.start()
        assert refresher.hook is not None
        stager = Stager(folder)
        facts = [("I", {"id": i, "g": i % 3, "d": i % 2, "amount": i, "status": "ok"}) for i in range(1, 6)]
        dims = [("I", {"d": 0, "region": "north"}), ("I", {"d": 1, "region": "south"})]
        for schema, batch in [(DIMS, dims), (FACTS, facts)]:
            manifest, path = stager.batch(schema, batch)
            wh.apply(manifest, schema, path)
        view = next(iter(refresher.runs))
        assert refresher.runs[view].reason == ""  # maintained incrementally so far
        # Measured: the incremental path costs a second a row here, a recompute a millisecond.
        for v in refresher.runs:
            refresher.hook.costs[v] = Costs(runs=deque([(1, 1.0), (2, 2.0)]), recompute=0.001)
        updates = [("U", {"id": i, "g": 1, "d": 1, "amount": 2 * i, "status": "ok"}) for i in range(1, 6)]
        manifest, path = stager.batch(FACTS, updates)
        wh.apply(manifest, FACTS, path)
        for v in views.views:
            assert normal(wh.fetch(f"SELECT * FROM {v.name}")) == normal(wh.fetch(v.render("duckdb")))
            reason = refresher.runs[v.name].reason
            expected = "its last batch was recomputed in the merge (incremental estimated 5.000 s > recompute"
            assert reason.startswith(expected), reason
    finally:
        wh.close()
        shutil.rmtree(folder, ignore_errors=True)
