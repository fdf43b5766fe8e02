"""The pipeline acknowledges a source position only once the change is durably staged."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import Batch, Change, Column, Manifest, Op, Position, SchemaChange, TableId, TableSchema
from replicator.pipeline import Pipeline
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.values import parse_type
from replicator.warehouses import DuckDBWarehouse

T = TableId("dbo", "t")
SCHEMA = TableSchema(T, (Column("id", parse_type("bigint"), False), Column("v", parse_type("text"))), ("id",))


def change(i: int) -> Change:
    return Change(T, Op.INSERT, (str(i), f"v{i}"), Position(f"{i:08d}"))


class ReconnectingSource:
    """Yields 1, 2, 3, then (as a replication stream does after a reconnect) 2 and 3 again, then 4."""

    def __init__(self, staged: list[Position]) -> None:
        self.staged = staged
        self.acks: list[tuple[Position, Position | None]] = []  # (acknowledged, staged through at that time)
        self.done = False

    def schemas(self) -> Sequence[TableSchema]:
        return [SCHEMA]

    def read(self) -> Iterator[Change | SchemaChange]:
        if self.done:
            return
        self.done = True
        yield from (change(i) for i in (1, 2, 3, 2, 3, 4))

    def ack(self, positions: Mapping[TableId, Position]) -> None:
        for pos in positions.values():
            self.acks.append((pos, max(self.staged, default=None)))

    def close(self) -> None:
        pass


class RecordingStager(Stager):
    def __init__(self, store: LocalStore, staged: list[Position]) -> None:
        super().__init__(store, Quarantine(store))
        self.staged = staged

    def stage(self, batch: Batch, **kwargs: object) -> Manifest:
        manifest = super().stage(batch, **kwargs)  # type: ignore[arg-type]
        self.staged.append(batch.last)
        return manifest


def test_a_re_yielded_change_that_is_only_buffered_is_not_acknowledged_before_it_is_staged(
    tmp_path: Path,
) -> None:
    staged: list[Position] = []
    source = ReconnectingSource(staged)
    store = LocalStore(tmp_path / "staging")
    warehouse = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    try:
        pipeline = Pipeline(
            source=source,
            stager=RecordingStager(store, staged),
            warehouse=warehouse,
            schemas={T: SCHEMA},
            batch=BatchConfig(max_rows=1000, max_age_seconds=60),
            settings=PipelineConfig(),
        )
        pipeline.run(threading.Event(), once=True)
    finally:
        warehouse.close()
    assert source.acks, "the staged batch was acknowledged"
    for acknowledged, durable in source.acks:
        assert durable is not None and acknowledged <= durable, (acknowledged, durable)
    assert max(a for a, _ in source.acks) == Position("00000004")
