"""Setup shared by the DMS source tests: the stores a feed is read from, files put where DMS writes them, and
one capture-and-merge round into DuckDB."""

from __future__ import annotations

import threading
from pathlib import Path

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import TableId, TableSchema
from replicator.pipeline import Pipeline
from replicator.sources.dms import DmsOptions, DmsSource
from replicator.stage import Stager
from replicator.storage import LocalStore, ObjectStore, Quarantine
from replicator.warehouses import DuckDBWarehouse


def put(store: ObjectStore, table: TableId, name: str, text: str | bytes) -> None:
    """A file of ``table`` named ``name``, where DMS writes it (``schema/table/name``)."""
    data = text.encode() if isinstance(text, str) else text
    store.put(f"{table.schema}/{table.name}/{name}", data)


def pipeline_round(
    data: ObjectStore,
    schemas: dict[TableId, TableSchema],
    tmp_path: Path,
    options: DmsOptions,
    batch: BatchConfig | None = None,
) -> DmsSource:
    """One capture-and-merge round over the feed in ``data`` (a fresh process each time): staging and the
    quarantine in ``tmp_path/staging``, the target ``tmp_path/wh.duckdb``. Returns the round's source."""
    staging = LocalStore(tmp_path / "staging")
    quarantine = Quarantine(staging)
    source = DmsSource(data, schemas, state=staging, quarantine=quarantine, options=options)
    warehouse = DuckDBWarehouse(str(tmp_path / "wh.duckdb"))
    try:
        Pipeline(
            source=source, stager=Stager(staging, quarantine), warehouse=warehouse, schemas=schemas,
            batch=batch or BatchConfig(), settings=PipelineConfig(poll_interval_seconds=0),
        ).run(threading.Event(), once=True)  # fmt: skip
    finally:
        warehouse.close()
    return source
