"""A steady trickle is merged while the source is still streaming (issue 16): the batch age decides when
changes are staged and merged, not the end of a read, which a stream that is never quiet does not reach."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import Change, Column, Op, Position, SchemaChange, TableId, TableSchema
from replicator.pipeline import Pipeline
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.values import parse_type
from replicator.warehouses import DuckDBWarehouse
from tests.helpers.warehouse import row_counter

T = TableId("dbo", "t")
SCHEMA = TableSchema(T, (Column("id", parse_type("bigint"), False), Column("v", parse_type("text"))), ("id",))


class Trickle:
    """One read that yields a change every 20 ms for ``seconds`` (never quiet), noting, as each change is
    yielded, how many rows the target held by then."""

    def __init__(self, seconds: float, rows_in_target: object) -> None:
        self.seconds = seconds
        self.count = rows_in_target
        self.seen: list[tuple[float, int, int]] = []  # (seconds into the read, yielded so far, in target)
        self.done = False

    def schemas(self) -> Sequence[TableSchema]:
        return [SCHEMA]

    def read(self) -> Iterator[Change | SchemaChange]:
        if self.done:
            return
        self.done = True
        started = time.monotonic()
        i = 0
        while (now := time.monotonic() - started) < self.seconds:
            i += 1
            self.seen.append((now, i - 1, self.count()))  # type: ignore[operator]
            yield Change(T, Op.INSERT, (str(i), f"v{i}"), Position(f"{i:08d}"))
            time.sleep(0.02)

    def ack(self, positions: Mapping[TableId, Position]) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_trickle_is_queryable_within_about_the_batch_age_while_the_read_goes_on(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    rows_in_target = row_counter(warehouse, '"dbo"."t"')
    source = Trickle(3.0, rows_in_target)
    store = LocalStore(tmp_path / "staging")
    try:
        pipeline = Pipeline(
            source=source,
            stager=Stager(store, Quarantine(store)),
            warehouse=warehouse,
            schemas={T: SCHEMA},
            batch=BatchConfig(max_rows=100_000, max_age_seconds=0.2),
            settings=PipelineConfig(merge_interval_seconds=0.1),
        )
        pipeline.run(threading.Event(), once=True)
        assert rows_in_target() == len(source.seen)
    finally:
        warehouse.close()
    # From one second into the read on, what was yielded 0.6 s before (age 0.2 s, checks every 0.02 s,
    # merges every 0.1 s, and slack for a busy machine) is in the target, long before the read ends.
    late = [(at, shown) for at, _, shown in source.seen if at >= 1.0]
    assert late, source.seen[-3:]
    for at, shown in late:
        yielded_before = max(n for t, n, _ in source.seen if t <= at - 0.6)
        assert shown >= yielded_before, (at, shown, yielded_before)
