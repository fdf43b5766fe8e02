"""Copying tables under one snapshot in worker threads, holding back what streams meanwhile, and the
bookkeeping of tables copied again while the others stream (``Recopies``).

A ``CopyRound`` copies a set of tables under one snapshot: the one the main slot exported at its creation
(the initial copy; nothing streams meanwhile) or one a temporary slot exports (a table added to the schemas
later, or a resync; the other tables keep streaming). Worker threads, each on its own connection importing
the snapshot, take tables one at a time, so several tables are read at once, and each table's copy is
produced by one worker in order: a TRUNCATE at ordinal 0, then its rows as ``ChangeChunk``s, all at
``consistent point - 1``, then a ``TableCopied``. The source's thread takes them from a bounded queue
(``take``), so a copy never runs further ahead of the pipeline than a few chunks.

``Held`` keeps, per table being copied, what the slot streams for it meanwhile: it may not be yielded
before the copy (its positions sort after the copy's, and the pipeline's buffer drops what sorts before
something it has seen). When the copy is done, what committed before the consistent point (in the copy)
is dropped and the rest is released in order.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import structlog

from replicator.buffer import change_bytes, chunk_bytes
from replicator.model import (
    COMMIT_TIME_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    Change,
    ChangeChunk,
    Column,
    Op,
    SchemaChange,
    TableId,
    TableSchema,
)
from replicator.obs import progress
from replicator.sources.postgres.rows import (
    Txn,
    column_type,
    encode_position,
    position_range,
    widened_columns,
)
from replicator.sources.postgres.snapshot import SnapshotReader, temporary_snapshot

log = structlog.get_logger("replicator.sources.postgres.source")

_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True, slots=True)
class TableCopied:
    """A table's copy is complete: every change of it was handed out before this."""

    table: TableId
    consistent: int  # transactions whose commit record is before this LSN are in the copy, later ones not
    last: str  # Position.value of the copy's last change (its TRUNCATE when the table is empty)
    rows: int
    seconds: float


class CopyFailed(RuntimeError):
    """A copy worker failed; the round is over and nothing of it was acknowledged."""


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class _Stopped(Exception):
    """The round was closed while a worker waited to hand a chunk over."""


CopyItem = Change | ChangeChunk | SchemaChange | TableCopied


class CopyRound:
    """Copies ``schemas``' tables under one snapshot with ``workers`` threads; see the module docstring.

    ``snapshot``: (consistent point, exported snapshot name) to use, else ``temp_slot`` names a temporary
    slot to create for a fresh one (the round's consistent point is then known once a ``TableCopied`` says
    it). Call ``take`` until ``finished``; ``close`` stops the workers (also mid-copy). ``skip`` (read at
    each ``take``) names tables stopped for bad input: what is copied of them is dropped, not handed out."""

    def __init__(
        self,
        dsn: str,
        schemas: Mapping[TableId, TableSchema],
        *,
        snapshot: tuple[int, str] | None = None,
        temp_slot: str | None = None,
        workers: int = 2,
        chunk_bytes: int = 4 << 20,
        skip: Container[TableId] = frozenset(),
    ) -> None:
        if (snapshot is None) == (temp_slot is None):
            raise ValueError("give either an exported snapshot or a temporary slot name")
        self.dsn = dsn
        self.schemas = dict(schemas)
        self.tables = frozenset(schemas)
        self.workers = max(1, min(workers, len(schemas)))
        self.chunk_bytes = chunk_bytes
        self.skip = skip
        self._snapshot = snapshot
        self._temp_slot = temp_slot
        self._queue: queue.Queue[CopyItem | _Failed] = queue.Queue(maxsize=2 * self.workers + 2)
        self._stop = threading.Event()
        self._copied = 0
        self._thread = threading.Thread(target=self._run, name="pg-copy", daemon=True)
        self._thread.start()

    # -- the source's side -------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Every table's ``TableCopied`` was taken."""
        return self._copied == len(self.tables)

    def take(self, timeout: float) -> list[CopyItem]:
        """What the workers handed over, in order (waiting up to ``timeout`` for the first item)."""
        items: list[CopyItem] = []
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            while True:
                if isinstance(item, _Failed):
                    self.close()
                    raise CopyFailed(f"table copy failed: {item.error}") from item.error
                if isinstance(item, TableCopied):
                    self._copied += 1
                if item.table not in self.skip:
                    items.append(item)
                if len(items) >= 64:
                    break
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return items

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    # -- the workers' side -------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self._snapshot is not None:
                self._copy_all(*self._snapshot)
            else:
                assert self._temp_slot is not None
                with temporary_snapshot(self.dsn, self._temp_slot) as (consistent, name):
                    self._copy_all(consistent, name)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the source's thread, which raises it
            self._fail(exc)

    def _copy_all(self, consistent: int, snapshot: str) -> None:
        todo: queue.SimpleQueue[TableId] = queue.SimpleQueue()
        for table in sorted(self.tables):
            todo.put(table)
        # Every worker imports the snapshot before any copies: the exporter must stay idle until then.
        readers = [SnapshotReader(self.dsn, snapshot)]
        try:
            readers += [SnapshotReader(self.dsn, snapshot) for _ in range(self.workers - 1)]
            threads = [
                threading.Thread(target=self._work, args=(r, todo, consistent), daemon=True) for r in readers
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for r in readers:
                r.close()

    def _work(self, reader: SnapshotReader, todo: queue.SimpleQueue[TableId], consistent: int) -> None:
        try:
            while not self._stop.is_set():
                try:
                    table = todo.get_nowait()
                except queue.Empty:
                    return
                self._copy_table(reader, table, consistent)
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the source's thread, which raises it
            self._fail(exc)

    def _copy_table(self, reader: SnapshotReader, table: TableId, consistent: int) -> None:
        started = time.monotonic()
        schema = self.schemas[table]
        lsn, now = consistent - 1, datetime.now(UTC)
        # The table as the snapshot has it, which may differ from the schema file: a column added at the
        # source since is copied too (a schema change first, as the stream would announce it), and one
        # dropped since comes as NULL (the copy's SELECT would fail on it and stop every table).
        found = reader.columns(table)
        present = {name for name, _, _ in found}
        missing = frozenset(c for c in schema.column_names if c not in present)
        added = [Column(n, column_type(oid, mod)) for n, oid, mod in found if n not in schema.column_names]
        # A column the source widened since the schema file (ALTER COLUMN ... TYPE int -> bigint...) is
        # copied in the wider type, as the stream would widen it: its values may not fit the declared one.
        widened = widened_columns(schema, {n: column_type(oid, mod) for n, oid, mod in found})
        if added or widened:
            kept = tuple(
                Column(c.name, widened.get(c.name, c.type), c.nullable, c.default) for c in schema.columns
            )
            schema = TableSchema(table, kept + tuple(added), schema.primary_key)
            self._put(SchemaChange(table, schema, encode_position(lsn, 0)))
            log.info(
                "source_columns_changed", table=str(table), columns=[c.name for c in added],
                widened={n: str(t) for n, t in widened.items()} or None, during="copy",
            )  # fmt: skip
        if missing:
            log.warning("copy_columns_missing_at_source", table=str(table), columns=sorted(missing),
                        detail="copied as NULL")  # fmt: skip
        self._put(Change(table, Op.TRUNCATE, (), encode_position(lsn, 0), now))
        n = 0
        bar = progress.copying(str(table), reader.estimate(table))  # on a terminal only

        def emit(values: pa.Table) -> None:
            nonlocal n
            k = values.num_rows
            data = values.append_column(OP_COLUMN, pa.repeat(pa.scalar("I"), k))
            data = data.append_column(POSITION_COLUMN, position_range(lsn, n + 1, k))
            data = data.append_column(COMMIT_TIME_COLUMN, pa.repeat(pa.scalar(now, _TS), k))
            self._put(ChangeChunk(table, schema, data))  # blocks while the queue is full
            n += k
            bar.advance(k)

        try:
            reader.copy(table, schema.column_names, emit, chunk_bytes=self.chunk_bytes, missing=missing)
        finally:
            bar.done()
        seconds = time.monotonic() - started
        self._put(TableCopied(table, consistent, encode_position(lsn, n).value, n, seconds))

    def _put(self, item: CopyItem) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _fail(self, exc: BaseException) -> None:
        self._stop.set()  # the other workers stop at their next chunk
        # The queue may be full of chunks nobody will take now: make room for the failure.
        while True:
            try:
                self._queue.put_nowait(_Failed(exc))
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()


Streamed = Change | ChangeChunk | SchemaChange


class Held:
    """Streamed changes of tables being copied, in order, until their copy is handed out."""

    def __init__(self) -> None:
        self._items: dict[TableId, list[Streamed]] = {}
        self.rows = 0  # changes held, all tables
        self._sizes: dict[TableId, int] = {}  # bytes held per table, valid while its list is in ``_items``

    def add(self, item: Streamed) -> None:
        items = self._items.get(item.table)
        if items is None:
            items = self._items[item.table] = []
            self._sizes[item.table] = 0  # a new list: what was counted before was released or dropped
        items.append(item)
        self.rows += len(item) if isinstance(item, ChangeChunk) else 1
        if isinstance(item, Change):
            self._sizes[item.table] += change_bytes(item)
        elif isinstance(item, ChangeChunk):
            self._sizes[item.table] += chunk_bytes(item)

    @property
    def bytes(self) -> int:
        """What the held changes cost in memory (as the buffer counts it), all tables. A row count alone
        let 500,000 changes of 1 MB values be held."""
        return sum(self._sizes[t] for t in self._items)

    def drop(self, table: TableId) -> None:
        """Forget what is held of ``table`` (it stopped)."""
        for item in self._items.pop(table, []):
            self.rows -= len(item) if isinstance(item, ChangeChunk) else 1

    def release(self, table: TableId, consistent: int) -> list[Streamed]:
        """``table``'s held changes that committed at or after ``consistent`` (the rest is in the copy);
        schema changes are kept whatever their position (applying one again changes nothing)."""
        cut = encode_position(consistent, 0).value
        out: list[Streamed] = []
        for item in self._items.pop(table, []):
            self.rows -= len(item) if isinstance(item, ChangeChunk) else 1
            if isinstance(item, SchemaChange):
                out.append(item)
            elif isinstance(item, Change):
                if item.position.value >= cut:
                    out.append(item)
            else:
                keep = pc.greater_equal(item.data.column(POSITION_COLUMN), cut)
                data = item.data.filter(keep)
                if data.num_rows:
                    out.append(ChangeChunk(item.table, item.schema, data))
        return out


class Recopies:
    """Tables copied again while the others stream: added to the schemas after the initial copy, or
    resynced. ``wanted`` is persisted in the source's state until the copy is acknowledged (a restart in
    between copies again); ``todo`` are the tables whose copy this process has not handed out yet: their
    streamed changes are held (``held``) meanwhile. One ``CopyRound`` runs at a time, for all of ``todo``.
    ``skip``: the source's stopped tables (``PostgresSource.stop_table``), never handed out by a round.
    """

    def __init__(self, skip: Container[TableId] = frozenset()) -> None:
        self.skip = skip
        self.wanted: set[TableId] = set()
        self.todo: set[TableId] = set()
        self.pending: dict[TableId, str] = {}  # copied: its last position, until acknowledged
        self.again: set[TableId] = set()  # resynced again while being copied: copied once more after
        self.held = Held()
        self.hold_rows = 500_000  # held changes beyond which streaming waits for the copy
        self.hold_bytes = 64 << 20  # ... or held bytes (large values), whichever comes first
        self.round: CopyRound | None = None
        self.said_waiting = False  # the round's "streaming waits" was logged

    def add(self, tables: Iterable[TableId]) -> None:
        tables = set(tables)
        self.wanted |= tables
        self.todo |= tables

    def clear(self) -> None:
        """Forget every request (a full copy of all tables is about to cover them); ``hold_rows`` stays."""
        self.close()
        self.wanted, self.todo, self.pending, self.again = set(), set(), {}, set()
        self.held, self.round = Held(), None

    def stop(self, table: TableId) -> None:
        """``table`` stopped for bad input: no copy of it is wanted any more, nothing of it is held. A round
        under way still copies it (its output is dropped, ``skip``); if a resync asks for it again before
        that round ends, its copy there is incomplete, so it is marked to be copied once more."""
        self.wanted.discard(table)
        self.todo.discard(table)
        self.pending.pop(table, None)
        self.held.drop(table)
        if self.round is not None and table in self.round.tables:
            self.again.add(table)
        else:
            self.again.discard(table)

    def request(self, table: TableId) -> None:
        """A resync of ``table``: (again) copy it."""
        self.pending.pop(table, None)
        if self.round is not None and table in self.round.tables and table in self.todo:
            self.again.add(table)  # the copy under way is already out of date
        self.add([table])

    @property
    def streaming_waits(self) -> bool:
        """Too much is held: stop reading the slot until the copy is out."""
        held = self.held
        return self.round is not None and (held.rows >= self.hold_rows or held.bytes >= self.hold_bytes)

    def start(
        self,
        dsn: str,
        slot: str,
        schemas: Mapping[TableId, TableSchema],
        *,
        workers: int,
        chunk_bytes: int,
    ) -> None:
        """A round copying every table of ``todo`` under a fresh temporary slot's snapshot."""
        tables = {t: schemas[t] for t in sorted(self.todo)}
        temp = f"{slot[:40]}_copy_{uuid.uuid4().hex[:8]}"
        self.round = CopyRound(
            dsn, tables, temp_slot=temp, workers=workers, chunk_bytes=chunk_bytes, skip=self.skip
        )
        self.said_waiting = False
        log.info("table_copy_started", tables=sorted(map(str, tables)), slot=slot)

    def take(self, wait: float, txns: Iterable[Txn], yielded: dict[TableId, str]) -> Iterator[Streamed]:
        """What the running round handed over (waiting up to ``wait`` seconds for it) and, for each table
        done, its held changes from the consistent point on. ``txns`` (the source's open transactions) stop
        waiting for the table's changes the copy holds; ``yielded`` moves past them, so the slot's resends
        of them are skipped."""
        copy = self.round
        assert copy is not None
        for item in copy.take(wait):
            if not isinstance(item, TableCopied):
                yield item
                continue
            table = item.table
            if table in self.again:
                self.again.discard(table)  # stays held; copied again in the next round
                continue
            cut = encode_position(item.consistent, 0).value
            for txn in txns:
                if txn.last.get(table, cut) < cut:
                    del txn.last[table]  # its changes of ``table`` are in the copy
            last_before = encode_position(item.consistent - 1, 0xFFFFFFFFFFFF).value
            yielded[table] = max(yielded.get(table, ""), last_before)
            self.pending[table] = item.last
            self.todo.discard(table)
            yield from self.held.release(table, item.consistent)
            log.info("table_recopied", table=str(table), rows=item.rows, seconds=round(item.seconds, 2),
                     consistent_point=f"{item.consistent:X}")  # fmt: skip
        if copy.finished:
            copy.close()
            self.round = None
            self.again &= self.todo  # a table stopped during the round and not resynced is not copied again

    def acknowledged(self, acked: Mapping[TableId, str]) -> list[TableId]:
        """Tables whose copy is now acknowledged in full (no longer wanted)."""
        done = [t for t, p in self.pending.items() if acked.get(t, "") >= p]
        for t in done:
            del self.pending[t]
            self.wanted.discard(t)
        return done

    def close(self) -> None:
        if self.round is not None:
            self.round.close()
