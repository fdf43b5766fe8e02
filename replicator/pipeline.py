"""The loop that ties source, buffer, stage and warehouse together.

Order of durable effects, which the guarantees rest on:

1. a batch is written to staging (Parquet, then its manifest);
2. only then is the source told its positions are done (``ack``);
3. staged batches of each table are applied oldest first; each apply commits the target change and its
   ledger row in one transaction;
4. only then is the staged batch removed.

A crash between any two steps is repaired by the next run: 1-2 by dropping re-read changes already staged
(the buffer's ``seen_through``), 3-4 by the ledger, which makes re-applying a batch a no-op.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from replicator.buffer import Buffer
from replicator.config import BatchConfig, PipelineConfig
from replicator.faults import crash_point
from replicator.model import Batch, Manifest, Op, Position, SchemaChange, TableId, TableSchema
from replicator.obs import metrics
from replicator.sources.base import Source
from replicator.stage import Stager
from replicator.store import LocalStore
from replicator.warehouses.base import Warehouse

log = structlog.get_logger(__name__)

_OP_LABEL = {Op.INSERT: "insert", Op.UPDATE: "update", Op.DELETE: "delete", Op.TRUNCATE: "truncate"}


@dataclass(slots=True)
class RunStats:
    captured: int = 0
    staged_batches: int = 0
    applied_batches: int = 0
    skipped_batches: int = 0
    failed_tables: int = 0


class Pipeline:
    def __init__(
        self,
        *,
        source: Source,
        stager: Stager,
        warehouse: Warehouse,
        schemas: Mapping[TableId, TableSchema],
        batch: BatchConfig,
        settings: PipelineConfig,
    ) -> None:
        self.source = source
        self.stager = stager
        self.warehouse = warehouse
        self.schemas = dict(schemas)
        self.batch_cfg = batch
        self.settings = settings
        self.stats = RunStats()
        self.errors: dict[TableId, str] = {}
        self._buffer: Buffer | None = None

    # -- start-up ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Prepare the warehouse and work out, per table, how far changes are already staged."""
        self.warehouse.setup()
        for schema in self.schemas.values():
            self.warehouse.ensure_table(schema)
        seen: dict[TableId, Position] = {}
        for table, state in self.warehouse.table_states().items():
            if state.applied_through is not None:
                seen[table] = state.applied_through
        for table in self.stager.staged_tables():
            for m in self.stager.pending(table):
                if table not in seen or m.last > seen[table]:
                    seen[table] = m.last
        self._buffer = Buffer(
            self.schemas,
            max_rows=self.batch_cfg.max_rows,
            max_bytes=self.batch_cfg.max_bytes,
            max_age_seconds=self.batch_cfg.max_age_seconds,
            seen_through=seen,
        )
        log.info(
            "pipeline_started",
            tables=len(self.schemas),
            staged_through={str(t): str(p) for t, p in seen.items()},
        )

    # -- the loop ---------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, once: bool = False) -> RunStats:
        """Run until ``stop`` is set, or with ``once`` until a round finds nothing new (then exit)."""
        if self._buffer is None:
            self.start()
        while not stop.is_set():
            captured = self.capture(stop)
            if stop.is_set():
                break
            self.merge_all(stop)
            if once and captured == 0:
                break
            if not once:
                stop.wait(self.settings.poll_interval_seconds if captured == 0 else 0)
        return self.stats

    def capture(self, stop: threading.Event) -> int:
        """Read what the source has now, staging batches as they fill; merge on the way if it takes long."""
        buffer = self._buffer
        assert buffer is not None, "start() first"
        n = 0
        last_merge = time.monotonic()
        for change in self.source.read():
            if isinstance(change, SchemaChange):
                for batch in buffer.set_schema(change):
                    self._stage(batch)
                self.schemas[change.table] = change.schema
                log.info("schema_changed", table=str(change.table), columns=list(change.schema.column_names))
                continue
            n += 1
            metrics.CHANGES_CAPTURED.labels(table=str(change.table), op=_OP_LABEL[change.op]).inc()
            for batch in buffer.add(change):
                self._stage(batch)
            if n % 1024 == 0:
                for batch in buffer.due():
                    self._stage(batch)
                if stop.is_set():
                    # Unstaged changes are simply abandoned: they were never acknowledged, so the source
                    # yields them again after the restart.
                    return n
                if time.monotonic() - last_merge >= self.settings.merge_interval_seconds:
                    self.merge_all(stop)
                    last_merge = time.monotonic()
        if stop.is_set():
            return n
        # The source has caught up: holding changes back now would only add latency.
        for batch in buffer.drain():
            self._stage(batch)
        self.stats.captured += n
        return n

    def _stage(self, batch: Batch) -> None:
        bound = log.bind(table=str(batch.table), batch_id=batch.id)
        manifest = self.stager.stage(batch)
        crash_point("after_stage")
        self.source.ack({batch.table: batch.last})
        self.stats.staged_batches += 1
        bound.debug(
            "batch_staged",
            rows=manifest.rows,
            bytes=manifest.bytes,
            first=str(batch.first),
            last=str(batch.last),
        )

    def merge_all(self, stop: threading.Event | None = None) -> None:
        """Apply every staged batch, table by table, oldest first. A failing table does not stop others."""
        for table in sorted(self.schemas):
            if stop is not None and stop.is_set():
                return
            try:
                self.merge_table(table, stop)
                self.errors.pop(table, None)
            except Exception as exc:
                self.stats.failed_tables += 1
                self.errors[table] = f"{type(exc).__name__}: {exc}"
                metrics.ERRORS.labels(stage="merge", kind=type(exc).__name__).inc()
                log.error("merge_failed", table=str(table), error=self.errors[table])

    def merge_table(self, table: TableId, stop: threading.Event | None = None) -> int:
        pending = list(self.stager.pending(table))
        metrics.BACKLOG_BATCHES.labels(table=str(table)).set(len(pending))
        applied = 0
        for i, manifest in enumerate(pending):
            if stop is not None and stop.is_set():
                break
            # The batch's own shape, not the catalog's: it may have been staged before or after a change.
            self._apply(manifest, manifest.schema())
            applied += 1
            metrics.BACKLOG_BATCHES.labels(table=str(table)).set(len(pending) - i - 1)
        return applied

    def _apply(self, manifest: Manifest, schema: TableSchema) -> None:
        name = str(manifest.table)
        bound = log.bind(table=name, batch_id=manifest.batch_id)
        store = self.stager.store
        started = time.perf_counter()
        if isinstance(store, LocalStore):
            result = self.warehouse.apply(manifest, schema, Path(store.uri(manifest.data_key)))
        else:
            with tempfile.TemporaryDirectory(prefix="replicator-") as tmp:
                local = Path(tmp) / "batch.parquet"
                store.download(manifest.data_key, local)
                result = self.warehouse.apply(manifest, schema, local)
        crash_point("after_merge")
        self.stager.remove(manifest)
        seconds = time.perf_counter() - started
        metrics.MERGE_SECONDS.labels(table=name).observe(seconds)
        if result.applied:
            self.stats.applied_batches += 1
            metrics.BATCHES_MERGED.labels(table=name, result="applied").inc()
            for op, count in (
                ("insert", manifest.inserts),
                ("update", manifest.updates),
                ("delete", manifest.deletes),
            ):
                if count:
                    metrics.CHANGES_MERGED.labels(table=name, op=op).inc(count)
            if manifest.max_commit_time is not None:
                lag = (datetime.now(UTC) - manifest.max_commit_time).total_seconds()
                metrics.LAG_SECONDS.labels(table=name).set(max(lag, 0.0))
            bound.info(
                "batch_applied",
                rows=manifest.rows,
                upserted=result.inserted,
                deleted=result.deleted,
                seconds=round(seconds, 3),
            )
        else:
            self.stats.skipped_batches += 1
            metrics.BATCHES_MERGED.labels(table=name, result="skipped").inc()
            bound.info("batch_already_applied", last=str(manifest.last))
