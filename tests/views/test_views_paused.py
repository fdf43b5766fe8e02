"""A paused table's views are not refreshed from stale data without saying so (issue 6).

While a table's merge is paused, the pipeline still refreshes the views reading it (their other inputs move
on), but each such view carries a note in ``status`` naming the paused table, and a full refresh that reads
it logs ``view_refreshed_with_stale_input``. Resuming clears the note. Run through the real pipeline (a
scripted source, DuckDB), so removing the report or the pipeline's hand-over of its paused tables fails here.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import Op, TableId
from replicator.pipeline import Pipeline
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.views.refresh import ViewRefresher, read_status
from replicator.warehouses import DuckDBWarehouse
from tests.helpers.scripted import ScriptedSource
from tests.helpers.views import PLANS, READS_PLANS, TABLES, VIEWS, payment, plan, practice_and_patient

NOTE = "reads dbo.payment_plans, whose merge is paused or failing"


def _notes(wh: DuckDBWarehouse) -> dict[str, str | None]:
    return {s.view: s.note for s in read_status(wh.fetch)}


def _stale_in_a_minute(wh: DuckDBWarehouse) -> dict[str, float]:
    """Each view's ``status`` staleness as it will read a minute from now."""
    return {
        s.view: s.stale_seconds for s in read_status(wh.fetch, now=datetime.now(UTC) + timedelta(minutes=1))
    }


def _stale_refreshes(logs: list[MutableMapping[str, Any]]) -> list[tuple[str, str, list[str]]]:
    return [
        (e["log_level"], e["view"], e["stale_tables"])
        for e in logs
        if e["event"] == "view_refreshed_with_stale_input"
    ]


def test_views_of_a_paused_table_say_they_read_stale_data_until_it_resumes(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    store = LocalStore(tmp_path / "staging")
    source = ScriptedSource(list(TABLES.values()))
    pipeline = Pipeline(
        source=source, stager=Stager(store, Quarantine(store)), warehouse=wh, schemas=TABLES,
        batch=BatchConfig(), settings=PipelineConfig(poll_interval_seconds=0), views=ViewRefresher(VIEWS, wh),
    )  # fmt: skip
    stop = threading.Event()
    try:
        pipeline.start()
        source.script = [*practice_and_patient(), plan(Op.INSERT, "1000.00"), payment(1, "100.00")]
        with structlog.testing.capture_logs() as logs:
            pipeline.run(stop, once=True)
        assert _stale_refreshes(logs) == []
        assert set(_notes(wh).values()) == {None}, "no table is paused, yet a view says it reads stale data"

        pipeline.paused.add(PLANS)
        source.script = [plan(Op.UPDATE, "1200.00"), payment(2, "40.00")]
        with structlog.testing.capture_logs() as logs:
            pipeline.run(stop, once=True)
        # The payments went in and the views reading them were brought up to date; the plan change waits.
        owed = wh.fetch("SELECT total_fee, collected FROM reporting.delinquent_payment_plans")
        assert [(float(f), float(c)) for f, c in owed] == [(1000.0, 140.0)]
        # Every full refresh of a view reading the paused table warns (ar_aging too, when its 60 s
        # debounce lets it refresh in this round).
        warned = _stale_refreshes(logs)
        assert ("warning", "reporting.delinquent_payment_plans", ["dbo.payment_plans"]) in warned
        assert {(level, stale[0]) for level, _, stale in warned} == {("warning", "dbo.payment_plans")}
        assert {view for _, view, _ in warned} <= READS_PLANS
        notes = _notes(wh)
        assert {v for v, n in notes.items() if n is not None} == READS_PLANS
        assert {notes[v] for v in READS_PLANS} == {NOTE}
        assert notes["reporting.plan_collections"] is None  # reads payments only
        # Staleness counts from the pause, incremental views included (they never wait for a refresh).
        stale = _stale_in_a_minute(wh)
        assert all(stale[v] >= 59 for v in READS_PLANS), stale
        assert stale["reporting.plan_collections"] == 0

        pipeline.paused.discard(PLANS)
        source.script = []
        with structlog.testing.capture_logs() as logs:
            pipeline.run(stop, once=True)
        owed = wh.fetch("SELECT total_fee, collected FROM reporting.delinquent_payment_plans")
        assert [(float(f), float(c)) for f, c in owed] == [(1200.0, 140.0)]
        assert _stale_refreshes(logs) == []
        assert set(_notes(wh).values()) == {None}, "the note outlived the pause"
        assert set(_stale_in_a_minute(wh).values()) == {0}, "the staleness outlived the pause"

        # A restart while still paused keeps counting from the pause, not from the restart.
        pipeline.paused.add(PLANS)
        source.script = [plan(Op.UPDATE, "1300.00")]
        pipeline.run(stop, once=True)
        paused_at = {s.view: s.stale_seconds for s in read_status(wh.fetch)}
        wh.run_statements([
            "UPDATE _replicator.views SET behind_since = behind_since - INTERVAL 1 HOUR"
            " WHERE behind_since IS NOT NULL"
        ])  # fmt: skip
        again = ViewRefresher(VIEWS, wh)
        again.start()
        assert {again.runs[TableId(*v.split("."))].behind_since is not None for v in READS_PLANS} == {True}
        stale = {s.view: s.stale_seconds for s in read_status(wh.fetch)}
        assert all(stale[v] >= 3600 > paused_at[v] for v in READS_PLANS), stale
    finally:
        wh.close()


def test_a_views_state_table_from_before_the_staleness_column_gets_it_on_start(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    try:
        wh.setup()
        for schema in TABLES.values():
            wh.ensure_table(schema)
        ViewRefresher(VIEWS, wh).start()
        # The state table as a version before the column left it:
        wh.run_statements(["ALTER TABLE _replicator.views DROP COLUMN behind_since"])
        assert {s.stale_seconds for s in read_status(wh.fetch)} == {0}  # status still reads it
        ViewRefresher(VIEWS, wh).start()
        columns = wh.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = '_replicator' AND table_name = 'views'"
        )
        assert ("behind_since",) in columns
        assert {s.stale_seconds for s in read_status(wh.fetch)} == {0}
    finally:
        wh.close()
