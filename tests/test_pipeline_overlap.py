"""Merging overlaps reading (issue 16): while the source is still being read, what is already staged is merged
on the merge thread; ``capture`` returns only once that thread is idle, and an error it lets out reaches the
loop thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import Change, Column, Op, Position, SchemaChange, TableId, TableSchema
from replicator.pipeline import Pipeline
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.values import parse_type
from replicator.warehouses import DuckDBWarehouse
from tests.helpers.scripted import ScriptedSource
from tests.helpers.warehouse import row_counter

T = TableId("dbo", "t")
SCHEMA = TableSchema(T, (Column("id", parse_type("bigint"), False), Column("v", parse_type("text"))), ("id",))
FIRST = 1_000  # one full batch (max_rows), then the read waits


class WaitingSource(ScriptedSource):
    """Yields one full batch of inserts, then waits inside the read (up to 30 s) until the target holds them
    (possible only if something merges while the read is suspended), then yields as many again."""

    def __init__(self, rows_in_target: Callable[[], int]) -> None:
        super().__init__([SCHEMA])
        self.count = rows_in_target
        self.waited: float | None = None  # how long the read waited for the first batch to be merged
        self.done = False

    def read(self) -> Iterator[Change | SchemaChange]:
        if self.done:
            return
        self.done = True
        for i in range(1, 2 * FIRST + 1):
            yield Change(T, Op.INSERT, (str(i), f"v{i}"), Position(f"{i:08d}"))
            if i == FIRST:
                started = time.monotonic()
                while self.count() < FIRST and time.monotonic() - started < 30:
                    time.sleep(0.01)
                if self.count() >= FIRST:
                    self.waited = time.monotonic() - started


def _pipeline(tmp_path: Path, source: WaitingSource, warehouse: DuckDBWarehouse) -> Pipeline:
    store = LocalStore(tmp_path / "staging")
    return Pipeline(
        source=source,
        stager=Stager(store, Quarantine(store)),
        warehouse=warehouse,
        schemas={T: SCHEMA},
        batch=BatchConfig(max_rows=FIRST, max_age_seconds=60.0),
        settings=PipelineConfig(merge_interval_seconds=0.0),
    )


def test_a_staged_batch_is_merged_while_the_read_is_still_going_on(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    try:
        rows_in_target = row_counter(warehouse, '"dbo"."t"')
        source = WaitingSource(rows_in_target)
        pipeline = _pipeline(tmp_path, source, warehouse)
        pipeline.start()
        captured = pipeline.capture(threading.Event())
        # The first batch was merged while the read waited inside the stream; with merges run between the
        # read's steps (as before the merge thread) the read would have waited its 30 s for nothing.
        assert captured == 2 * FIRST
        assert source.waited is not None, "nothing was merged while the read was suspended"
        assert not [t for t in threading.enumerate() if t.name == "merge"], "capture returned mid-merge"
        pipeline.merge_round(everything=True)
        assert rows_in_target() == 2 * FIRST
        assert pipeline.stats.applied_batches == 2
    finally:
        warehouse.close()


class Boom(BaseException):
    pass


def _exploding(
    started: threading.Event | None = None,
) -> Callable[[list[TableId], threading.Event | None], None]:
    """A stand-in for ``Pipeline._merge`` that lets an error out of the merge thread (after setting
    ``started``)."""

    def explode(todo: list[TableId], stop: threading.Event | None) -> None:
        if started is not None:
            started.set()
        raise Boom("from the merge thread")

    return explode


def test_an_error_the_merge_thread_lets_out_is_raised_by_capture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    try:
        source = WaitingSource(lambda: FIRST)  # does not wait
        pipeline = _pipeline(tmp_path, source, warehouse)
        pipeline.start()
        monkeypatch.setattr(pipeline, "_merge", _exploding())
        with pytest.raises(Boom, match="from the merge thread"):
            pipeline.capture(threading.Event())
        assert not [t for t in threading.enumerate() if t.name == "merge"]
    finally:
        warehouse.close()


class FailingSource(WaitingSource):
    """Yields one full batch, then its read fails once the merge thread has started."""

    def __init__(self, started: threading.Event) -> None:
        super().__init__(lambda: 0)
        self.started = started

    def read(self) -> Iterator[Change | SchemaChange]:
        for i in range(1, FIRST + 2):
            yield Change(T, Op.INSERT, (str(i), f"v{i}"), Position(f"{i:08d}"))
        assert self.started.wait(30)
        raise ConnectionError("the source went away")


def test_when_the_read_fails_its_error_is_raised_not_the_merge_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    try:
        started = threading.Event()
        pipeline = _pipeline(tmp_path, FailingSource(started), warehouse)
        pipeline.start()
        monkeypatch.setattr(pipeline, "_merge", _exploding(started))
        with pytest.raises(ConnectionError, match="the source went away"):
            pipeline.capture(threading.Event())
        assert not [t for t in threading.enumerate() if t.name == "merge"]
    finally:
        warehouse.close()
