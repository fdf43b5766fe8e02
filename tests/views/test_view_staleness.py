"""A view reading a paused table is stale since the pause (README, Views), whenever the pipeline notices."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import Op
from replicator.ops import CONTROL, ControlStore
from replicator.pipeline import Pipeline
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.views.refresh import CONTROL_TABLE, ViewRefresher, read_status
from replicator.warehouses import DuckDBWarehouse
from tests.helpers.scripted import ScriptedSource
from tests.helpers.views import PLANS, READS_PLANS, TABLES, VIEWS, payment, plan, practice_and_patient


class _Session:
    """The warehouse's own connection as the control store's session (as the daemon's DuckDB session)."""

    def __init__(self, wh: DuckDBWarehouse) -> None:
        self.wh = wh

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self.wh.fetch(sql)

    def transact(self, statements: Sequence[str], check: str | None = None) -> list[tuple[Any, ...]]:
        self.wh.run_statements(list(statements))
        return self.wh.fetch(check) if check else []

    def close(self) -> None:
        pass


def test_the_views_name_the_control_table_the_operations_write() -> None:
    assert CONTROL_TABLE == CONTROL


def test_staleness_of_a_paused_input_counts_from_the_pause_not_from_the_held_batch(tmp_path: Path) -> None:
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
        pipeline.run(stop, once=True)
        # An operator paused the plans ten minutes ago; the daemon holds their merges back since then, and
        # the first held batch (and so the first round that notices) comes only now.
        control = ControlStore(_Session(wh))
        control.ensure()
        control.request("pause", PLANS, reason="test", who="operator")
        wh.run_statements(["UPDATE _replicator.table_control SET since = since - INTERVAL 10 MINUTE"])
        pipeline.paused.add(PLANS)
        source.script = [plan(Op.UPDATE, "1200.00"), payment(2, "40.00")]
        pipeline.run(stop, once=True)
        stale = {s.view: s.stale_seconds for s in read_status(wh.fetch, now=datetime.now(UTC))}
        assert all(600 <= stale[v] < 700 for v in READS_PLANS), stale
        assert stale["reporting.plan_collections"] == 0  # reads payments only
    finally:
        wh.close()
