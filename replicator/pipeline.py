"""The loop that ties source, buffer, stage and warehouse together.

Order of durable effects, which the guarantees rest on:

1. a batch is written to staging (Parquet, then its manifest);
2. only then is the source told its positions are done (``ack``);
3. staged batches of each table are applied oldest first; each apply commits the target change and its
   ledger row in one transaction;
4. only then is the staged batch removed.

While the source streams, merges of what is already staged run on a second thread (``_Merger``), so reading
and staging the next batches overlap them (both mostly release the GIL: Arrow, Parquet, the warehouse's
driver). Steps 1-2 stay on the loop thread and 3-4 on the merge thread, each in its order; a merge only
ever reads batches already staged, and ``capture`` returns only once its merge job has finished, so between
rounds the warehouse has one user again.

A crash between any two steps is repaired by the next run: 1-2 by dropping re-read changes already staged
(the buffer's ``seen_through``), 3-4 by the ledger, which makes re-applying a batch a no-op.
"""

from __future__ import annotations

import contextvars
import functools
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.compute as pc
import structlog

from replicator.buffer import Buffer
from replicator.config import BatchConfig, PipelineConfig
from replicator.model import (
    OP_COLUMN,
    Batch,
    ChangeChunk,
    Manifest,
    Op,
    Position,
    SchemaChange,
    TableId,
    TableSchema,
)
from replicator.obs import metrics
from replicator.sources import Drainable, Notifying, Source, Stoppable, Streaming
from replicator.stage import BatchRejected, RejectedRow, Stager
from replicator.storage import LocalStore, crash_point
from replicator.warehouses import ApplyResult, RoundFailed, Warehouse

if TYPE_CHECKING:
    from replicator.views import ViewRefresher

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
        views: ViewRefresher | None = None,
    ) -> None:
        self.source = source
        self.views = views  # refreshes views after merges; None when there are none
        self._changed: set[TableId] = set()  # tables with batches applied since the last view refresh
        self._recorded_errors: set[TableId] = set()  # tables a stop reason is recorded for
        self._staged_through: dict[TableId, Position] = {}  # durably staged or applied, per table
        self.stager = stager
        self.warehouse = warehouse
        self.schemas = dict(schemas)
        self.batch_cfg = batch
        self.settings = settings
        self.stats = RunStats()
        self.errors: dict[TableId, str] = {}
        self._buffer: Buffer | None = None
        self._halted: set[TableId] = set()  # tables the source stopped during this capture round
        self._fresh: set[TableId] = set()  # tables with batches staged since their last merge
        self._full_merge_at = 0.0  # when ``merge_round`` last looked at every table
        self._merger = _Merger()  # merges during ``capture``, on their own thread
        self._drain_said = time.monotonic()  # when ``--once`` last said it waits for the source
        # Tables whose merge is held back (paused, or waiting for a resync); capture and staging go on.
        # Changed by the daemon and its admin API under ``merge_gate``, which each apply holds, so once a
        # pause returns no further batch of that table commits.
        self.paused: set[TableId] = set()
        self.merge_gate = threading.Lock()
        # Called before each batch is staged and before each acknowledgement: raises when this task may no
        # longer write for its tables (scale-out: its claims may have expired while it stalled).
        self.guard: Callable[[], None] | None = None

    # -- start-up ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Prepare the warehouse and work out, per table, how far changes are already staged."""
        self.warehouse.setup()
        # Scale-out (a guard is set): other tasks stage their tables into the same store right now, so a data
        # file without its manifest may be one being written: only this task's tables are looked at.
        self.stager.remove_orphans(None if self.guard is None else list(self.schemas))
        for schema in self.schemas.values():
            self.warehouse.ensure_table(schema)
        if self.views is not None:
            self.views.start()
        # Reasons a previous run recorded for stopped tables: cleared once such a table merges again.
        recorded = getattr(self.warehouse, "schema_errors", None)
        self._recorded_errors = set(recorded()) if recorded is not None else set()
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
            max_bytes=self.batch_cfg.bytes,
            max_age_seconds=self.batch_cfg.age,
            seen_through=seen,
        )
        # What is durably staged (or applied) per table. The buffer's seen_through runs ahead of it: it also
        # covers changes only held in memory, which must never be acknowledged.
        self._staged_through = dict(seen)
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
        if once:
            self.mark_drain_point()
        while not stop.is_set():
            captured = self.capture(stop)
            if stop.is_set():
                break
            self.merge_round(stop, everything=once)
            self.refresh_views(flush=once and captured == 0)
            if once and captured == 0 and self.source_drained():
                break
            if not once:
                self.wait_between_rounds(captured, stop)
        return self.stats

    def idle_wait(self, captured: int) -> float:
        """How long to sleep before the next round: none after a round that found changes or when the
        source's read waits for news itself (``Streaming``), else ``poll_interval_seconds``."""
        if captured or (isinstance(self.source, Streaming) and self.source.waits_in_read):
            return 0.0
        return self.settings.poll_interval_seconds

    def wait_between_rounds(self, captured: int, stop: threading.Event) -> None:
        """Sleep ``idle_wait``, on the source's news where it has any (``Notifying``)."""
        wait = self.idle_wait(captured)
        if wait <= 0:
            return
        if isinstance(self.source, Notifying):
            self.source.wait_for_news(wait, stop)
        else:
            stop.wait(wait)

    def mark_drain_point(self) -> None:
        """For ``--once``: what the source holds now is what ``source_drained`` waits for."""
        if isinstance(self.source, Drainable):
            self.source.mark_drain_point()

    def source_drained(self) -> bool:
        """For ``--once``: the source has handed over all it held at start (``Drainable``). A round that
        finds nothing is not enough: a walsender decoding a large transaction sends nothing until its
        commit, however long that takes."""
        if not isinstance(self.source, Drainable):
            return True
        if self.source.drained():
            return True
        now = time.monotonic()
        if now - self._drain_said >= 30.0:
            self._drain_said = now
            log.info("once_waits_for_source", detail="the source has not sent all it held at start yet")
        return False

    def capture(self, stop: threading.Event) -> int:
        """Read what the source has now, staging batches as they fill; what is staged meanwhile is merged on
        the merge thread, overlapping the reading. Returns once that thread is idle again."""
        try:
            n = self._capture(stop)
        except BaseException:
            self._merger.join(quiet=True)  # the read's own error is the one to raise
            raise
        self._merger.join()
        return n

    def _capture(self, stop: threading.Event) -> int:
        buffer = self._buffer
        assert buffer is not None, "start() first"
        n = 0
        last_merge = time.monotonic()
        already_staged: dict[TableId, Position] = {}
        self._halted = set()
        # Due batches are looked for every 1,024 changes and at least every tenth of the batch age, so a
        # slow steady stream (never idle, so the read never ends) is still cut at max_age_seconds.
        check_at = 1024
        every = self.batch_cfg.age / 10
        check_time = time.monotonic() + every
        for change in self.source.read():
            if change.table in self._halted:
                continue  # stopped for bad input this round: the source yields it again once resumed
            if isinstance(change, SchemaChange):
                self._stage_all(buffer.set_schema(change))
                self.schemas[change.table] = change.schema
                log.info("schema_changed", table=str(change.table), columns=list(change.schema.column_names))
                continue
            dropped = buffer.dropped
            if isinstance(change, ChangeChunk):
                n += len(change)
                _count_chunk(change)
                staged = self._stage_all(buffer.add_chunk(change))
            else:
                n += 1
                metrics.CHANGES_CAPTURED.labels(table=str(change.table), op=_OP_LABEL[change.op]).inc()
                staged = self._stage_all(buffer.add(change))
            durable = self._staged_through.get(change.table)
            if (
                buffer.dropped != dropped
                and buffer.dropped_through is not None
                and durable is not None
                and buffer.dropped_through <= durable
            ):
                # Staged before (e.g. before a restart): acknowledge it anyway (in bulk below), or a source
                # that waits for every yielded change (PostgreSQL's flush position) would wait forever. A
                # re-yielded change that is only buffered is acknowledged when its batch is staged.
                already_staged[change.table] = buffer.dropped_through
            checkpoint = n >= check_at or time.monotonic() >= check_time
            if checkpoint:
                check_at, check_time = n + 1024, time.monotonic() + every
                if already_staged:
                    self._guard()
                    self.source.ack(already_staged)
                    already_staged = {}
                self._stage_all(buffer.due())
                if stop.is_set():
                    # Unstaged changes are simply abandoned: they were never acknowledged, so the source
                    # yields them again after the restart.
                    return n
            if (
                (checkpoint or staged)
                and self._fresh
                and not self._merger.busy()
                and time.monotonic() - last_merge >= self.settings.merge_interval
            ):
                # Only the tables that staged something: listing every table's staging each time would
                # cost a LIST per table on S3. The round's ``merge_all`` looks at all of them.
                fresh, self._fresh = self._fresh, set()
                todo = sorted(fresh & self.schemas.keys())
                self._merger.start(functools.partial(self._merge_and_refresh, todo, stop))
                last_merge = time.monotonic()
        if already_staged:
            self._guard()
            self.source.ack(already_staged)
        if stop.is_set():
            return n
        # The source has caught up: holding changes back now would only add latency.
        self._stage_all(buffer.drain())
        self.stats.captured += n
        return n

    def _stage_all(self, batches: Iterable[Batch]) -> bool:
        """Stage ``batches`` in turn; True if there were any. No caller variable keeps the last one alive
        until the next change (a batch of large values holds tens of MB: 342-347 -> 330-333 MB peak)."""
        staged = False
        for batch in batches:
            self._stage(batch)
            staged = True
        return staged

    def _stage(self, batch: Batch) -> None:
        if batch.table in self._halted:
            return
        bound = log.bind(table=str(batch.table), batch_id=batch.id)
        self._guard()
        try:
            manifest = self.stager.stage(batch, keep=self._keep_rejected)
        except BatchRejected as exc:
            # The source stopped the table (its bad-input policy): nothing of this batch is staged or
            # acknowledged, and the buffer forgets it, so the source's re-read after the operator's
            # decision is taken in full.
            assert self._buffer is not None
            self._buffer.rewind(batch)
            self._halted.add(batch.table)
            bound.error("batch_rejected", position=str(exc.row.position), detail=exc.row.detail)
            return
        crash_point("after_stage")
        self._fresh.add(batch.table)
        self._staged_through[batch.table] = batch.last
        self._guard()
        self.source.ack({batch.table: batch.last})
        crash_point("after_ack")
        self.stats.staged_batches += 1
        bound.debug(
            "batch_staged",
            rows=manifest.rows,
            bytes=manifest.bytes,
            first=str(batch.first),
            last=str(batch.last),
        )

    def _guard(self) -> None:
        if self.guard is not None:
            self.guard()

    def _keep_rejected(self, row: RejectedRow) -> bool:
        """A value that does not parse: the source's policy decides (sources without one go on)."""
        if not isinstance(self.source, Stoppable):
            return True
        stopped = self.source.stop_table(
            row.table, reason=row.reason, position=row.position, detail=row.detail
        )
        return not stopped

    def merge_round(self, stop: threading.Event | None = None, *, everything: bool = False) -> None:
        """The merges of a loop round: the tables that staged batches since their last merge, and every
        table (batches left by an earlier run, a resumed table's backlog, a failed table's retry) at most
        every ``poll_interval_seconds`` (each round with ``everything``). A streaming source ends a read
        every few hundred milliseconds when quiet: listing every table's staging each time would cost a
        LIST per table on S3."""
        now = time.monotonic()
        if everything or now - self._full_merge_at >= self.settings.poll_interval_seconds:
            self._full_merge_at = now
            self.merge_all(stop)
        elif self._fresh:
            self.merge_all(stop, tables=self._fresh)

    def merge_all(self, stop: threading.Event | None = None, *, tables: set[TableId] | None = None) -> None:
        """Apply every staged batch (of ``tables``, default all), table by table, oldest first. A failing
        table does not stop others."""
        todo = sorted(self.schemas) if tables is None else sorted(tables & self.schemas.keys())
        if tables is None:
            self._fresh = set()
        else:
            self._fresh -= tables
        self._merge(todo, stop)

    def _merge_and_refresh(self, todo: list[TableId], stop: threading.Event) -> None:
        """The merge thread's job during ``capture``: ``todo``'s staged batches, then the views."""
        self._merge(todo, stop)
        self.refresh_views()

    def _merge(self, todo: list[TableId], stop: threading.Event | None) -> None:
        active = []
        for table in todo:
            if table in self.paused:
                # Paused: the backlog keeps growing and is reported, nothing is applied.
                backlog = sum(1 for _ in self.stager.pending(table))
                metrics.BACKLOG_BATCHES.labels(table=str(table)).set(backlog)
            else:
                active.append(table)
        if getattr(self.warehouse, "round_commits", False):
            self._merge_in_one_commit(active, stop)
            return
        for table in active:
            if stop is not None and stop.is_set():
                return
            try:
                self.merge_table(table, stop)
                self._merged(table)
            except Exception as exc:
                self._merge_failed(table, exc)

    def _merged(self, table: TableId) -> None:
        if self.errors.pop(table, None) is not None or table in self._recorded_errors:
            self._recorded_errors.discard(table)
            self._note_table_error(table, None)

    def _merge_failed(self, table: TableId, exc: Exception) -> None:
        """The table's oldest batch failed: nothing after it may apply (order), so the table is stopped
        while the others go on. Each round retries it, so a transient failure (a dropped connection, a lock
        timeout) heals by itself; a terminal one stays, with its reason in `status` and
        replicator_table_failing, until an operator fixes the cause."""
        self.stats.failed_tables += 1
        reason = f"{type(exc).__name__}: {exc}"
        metrics.ERRORS.labels(stage="merge", kind=type(exc).__name__).inc()
        log.error("merge_failed", table=str(table), error=reason)
        if self.errors.get(table) != reason:
            self.errors[table] = reason
            self._note_table_error(table, reason)

    def _merge_in_one_commit(self, tables: list[TableId], stop: threading.Event | None) -> None:
        """Every staged batch of ``tables`` (each table's oldest first) in ONE warehouse transaction, for a
        warehouse whose commits are costly and serialised (Redshift: ``round_commits``). A table whose
        batch fails is set aside (``_merge_failed``) and the round is tried again without it, so it never
        holds the others back; when the commit itself fails, every table of the round is failed for this
        round (nothing committed) and the next round tries again.

        A round takes a table's batches up to a change of their shape (columns, types, defaults); the rest
        go in the next round. The warehouse evolves a table for all its batches of a round before it merges
        any (each ALTER commits on Redshift), so a later batch's ``ADD COLUMN`` reached the target first,
        and when the round was tried again the earlier batch took the column for one dropped at the source:
        its updates set it to NULL, over the default the source's rows hold (fuzzer seed 553248567)."""
        todo = list(tables)
        while todo and not (stop is not None and stop.is_set()):
            pending = {t: list(self.stager.pending(t)) for t in todo}
            for t, batches in pending.items():
                metrics.BACKLOG_BATCHES.labels(table=str(t)).set(len(batches))
            todo = [t for t in todo if pending[t]]
            if not todo:
                return
            taken = {t: _one_shape(pending[t]) for t in todo}
            with self.merge_gate:
                todo = [t for t in todo if t not in self.paused]
                if not todo:  # all paused meanwhile
                    return
                try:
                    self._apply_many([m for t in todo for m in taken[t]])
                except RoundFailed as exc:
                    if exc.table is None or exc.table not in todo:  # the commit itself failed
                        for t in todo:
                            self._merge_failed(t, exc.error)
                        return
                    self._merge_failed(exc.table, exc.error)
                    todo.remove(exc.table)
                    continue
                except Exception as exc:  # e.g. a staged file that could not be downloaded: nothing applied
                    for t in todo:
                        self._merge_failed(t, exc)
                    return
            for t in todo:
                metrics.BACKLOG_BATCHES.labels(table=str(t)).set(len(pending[t]) - len(taken[t]))
                self._merged(t)
            todo = [t for t in todo if len(taken[t]) < len(pending[t])]  # batches of a later shape

    def _note_table_error(self, table: TableId, reason: str | None) -> None:
        """Publish (or, with None, clear) why a table is stopped: a metric here, a row in the warehouse for
        ``replicator status`` in other processes. Best effort: the warehouse may be what is failing."""
        metrics.TABLE_FAILING.labels(table=str(table)).set(0 if reason is None else 1)
        name = "clear_table_error" if reason is None else "record_table_error"
        fn = getattr(self.warehouse, name, None)
        if fn is None:
            return
        try:
            fn(table) if reason is None else fn(table, reason[:2000])
        except Exception as exc:
            log.warning("table_error_not_recorded", table=str(table), error=f"{type(exc).__name__}: {exc}")

    def merge_table(self, table: TableId, stop: threading.Event | None = None) -> int:
        pending = list(self.stager.pending(table))
        metrics.BACKLOG_BATCHES.labels(table=str(table)).set(len(pending))
        applied = 0
        for i, manifest in enumerate(pending):
            if stop is not None and stop.is_set():
                break
            with self.merge_gate:
                if table in self.paused:
                    break
                # The batch's own shape, not the catalog's: it may have been staged before or after a change.
                self._apply(manifest, manifest.schema())
            applied += 1
            metrics.BACKLOG_BATCHES.labels(table=str(table)).set(len(pending) - i - 1)
        return applied

    def refresh_views(self, *, flush: bool = False) -> None:
        """Refresh the views that read tables changed since the last call (as their policies allow; all
        dirty ones with ``flush``). A view error is logged and counted; it never stops the merges."""
        if self.views is None:
            return
        changed, self._changed = self._changed, set()
        try:
            self.views.after_merges(changed, blocked=self.paused | set(self.errors), flush=flush)
        except Exception as exc:
            metrics.ERRORS.labels(stage="view", kind=type(exc).__name__).inc()
            log.error("view_refresh_failed", error=f"{type(exc).__name__}: {exc}")

    def forget(self, table: TableId) -> int:
        """For a resync: drop ``table``'s staged, unapplied batches and the buffer's memory of what was
        staged, so the source's fresh full load is staged from scratch. Call between rounds only (the buffer
        holds nothing then). Returns the number of batches dropped."""
        dropped = 0
        for manifest in list(self.stager.pending(table)):
            self.stager.remove(manifest)
            dropped += 1
        if self._buffer is not None:
            self._buffer.seen_through.pop(table, None)
        self._staged_through.pop(table, None)
        return dropped

    def _apply_many(self, manifests: list[Manifest]) -> None:
        """``apply_round`` of the warehouse over ``manifests``; then, as ``_apply`` does for one, each staged
        batch is removed and counted."""
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="replicator-") as tmp:
            local = [self._local_file(m, Path(tmp) / f"b{i}") for i, m in enumerate(manifests)]
            batches = [(m, m.schema(), path) for m, path in zip(manifests, local, strict=True)]
            results = self.warehouse.apply_round(batches)  # type: ignore[attr-defined]
        crash_point("after_merge")
        seconds = (time.perf_counter() - started) / max(len(manifests), 1)
        for manifest, result in zip(manifests, results, strict=True):
            self.stager.remove(manifest)
            self._count_applied(manifest, result, seconds)
        log.info("round_committed", batches=len(manifests), tables=len({m.table for m in manifests}))

    def _local_file(self, manifest: Manifest, scratch: Path) -> Path:
        """The batch's Parquet file on this machine: the staged file itself on a local store, else a copy
        downloaded to ``scratch`` (in a folder the caller removes)."""
        store = self.stager.store
        if isinstance(store, LocalStore):
            return Path(store.uri(manifest.data_key))
        store.download(manifest.data_key, scratch)
        return scratch

    def _apply(self, manifest: Manifest, schema: TableSchema) -> None:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="replicator-") as tmp:
            local = self._local_file(manifest, Path(tmp) / "batch")
            result = self.warehouse.apply(manifest, schema, local)
        crash_point("after_merge")
        self.stager.remove(manifest)
        self._count_applied(manifest, result, time.perf_counter() - started)

    def _count_applied(self, manifest: Manifest, result: ApplyResult, seconds: float) -> None:
        name = str(manifest.table)
        bound = log.bind(table=name, batch_id=manifest.batch_id)
        metrics.MERGE_SECONDS.labels(table=name).observe(seconds)
        if result.applied:
            self.stats.applied_batches += 1
            self._changed.add(manifest.table)
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


class _Merger:
    """One merge job at a time on a worker thread. An exception the job lets out (merges and view refreshes
    catch their own: a failing table is recorded and the others go on) is raised again by ``join``."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: Callable[[], None]) -> None:
        assert not self.busy(), "one merge job at a time"

        def run() -> None:
            try:
                job()
            except BaseException as exc:  # handed to the loop thread by join()
                self._error = exc

        # The loop thread's context (structlog's bound context variables) goes with the job.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(run,), name="merge", daemon=True)
        self._thread.start()

    def join(self, *, quiet: bool = False) -> None:
        """Wait for the job; raise what it let out (``quiet``: log it instead)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is None:
            return
        if not quiet:
            raise error
        log.error("merge_thread_failed", error=f"{type(error).__name__}: {error}")


def _one_shape(batches: list[Manifest]) -> list[Manifest]:
    """The leading batches that share the first one's shape (columns, types, defaults)."""
    shape = batches[0].columns
    n = 1
    while n < len(batches) and batches[n].columns == shape:
        n += 1
    return batches[:n]


def _count_chunk(chunk: ChangeChunk) -> None:
    for item in pc.value_counts(chunk.data.column(OP_COLUMN)).to_pylist():
        label = _OP_LABEL[Op(item["values"])]
        metrics.CHANGES_CAPTURED.labels(table=str(chunk.table), op=label).inc(item["counts"])
