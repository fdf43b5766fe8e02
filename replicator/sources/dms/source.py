"""The DMS source: files that AWS DMS writes to an S3 target (or a local folder with the same layout).

Formats (``DmsOptions``, named as the DMS endpoint settings): CSV (``dms_csv``) and Parquet
(``dms_parquet``); naming, date partitions and the op column (``dms_layout``); PreserveTransactions feeds
(``dms_txn``); S3 event hints (``dms_events``); progress and its document (``dms_state``); what bad input
does to its table (``dms_policy``).

Bad input goes to the quarantine with its file, row (and the row's byte range, or Parquet row group) and
reason; a table with column policies keeps no raw bytes there, only the row's fields after the policies.
Per table the policy is ``stop`` (default: the table stops at the bad row or file, ``problems()`` says why,
and ``resume(table, "retry"|"skip")`` is the operator's decision) or ``quarantine`` (the row or file is set
aside and the table goes on). A file that sorts before one already read always stops its table
(``out_of_order``): it is never applied out of order.

Layout under the store's root (the DMS BucketFolder): ``schema/table/LOAD00000001.csv`` ... (full load,
hex counter) and ``schema/table/20141029-1134010000.csv`` ... (CDC, named by time). Per table we read all
full-load files in name order, then all CDC files in name order, rows in file order.

Positions (``Position.value``): ``<phase>/<name> <row>``, e.g. ``1/LOAD00000001.csv 0000000042`` and
``2/20141029-1134010000.csv 0000000001`` (names as ``dms_layout.Naming`` makes them). Phase ``1`` (full
load) sorts before ``2`` (CDC); the name is the key below the table's folder, so names sort as the store
lists them; the space ends the name and is lower than any character a name may hold, so a name that is a
prefix of another (``x.csv`` / ``x.csv.gz``) sorts first, as listed; rows are zero-padded to a fixed width.
Names holding a character at or below the space
cannot be encoded and are quarantined (``bad_file_name``).

Progress (the ``state`` store, ``_state/dms/<schema>.<table>.json``, written atomically)::

    {"version": 1, "table": "dbo.t", "done": ["1/LOAD00000001.csv", "2/20141029-1134010000.csv"],
     "partial": {"file": "2/20141029-1135010000.csv", "rows": 42}, "updated_at": "..."}

``done`` holds the most recent handled files (consumed, or set aside as out of order), at most
``DmsOptions.recent_files`` per phase, in read order: every file up to its last entry is handled. ``partial``
is the file after it, whose first ``rows`` rows are acknowledged. Listing starts at the oldest remembered
file of each phase (``start_after``), so it stays cheap however many files the table has, while a late file
that lands among recently consumed ones is still seen: it is not in ``done``, sorts before the progress
point, and stops the table as ``out_of_order`` rather than being applied out of order. With the stop
policy the doc also holds ``"stopped": {"reason", "file", "row", "detail", "since"}`` and ``"skipped":
{file id: [rows the operator let go, 0 = the whole file]}``.
"""

from __future__ import annotations

import gzip
import tempfile
import threading
import time
import zlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, Literal

import structlog

from replicator.model import Change, ChangeChunk, Position, SchemaChange, TableId, TableSchema
from replicator.obs import metrics
from replicator.schema import ColumnPolicies
from replicator.sources.dms.arrow import decode_csv_columnar
from replicator.sources.dms.csvfiles import BadFile, BadRow, CsvLayout
from replicator.sources.dms.events import EventHints, quarantine_unknown_tables
from replicator.sources.dms.layout import CDC, LOAD, DmsOptions, Naming, is_parquet
from replicator.sources.dms.objects import is_gzip, open_object, size_of, stream_opener
from replicator.sources.dms.parquetfiles import decode_parquet
from replicator.sources.dms.policy import BadInput
from replicator.sources.dms.state import (
    Run,
    TableState,
    decode_position,
    encode_position,
    lag_seconds,
    load,
    save,
)
from replicator.storage import ObjectStore, Quarantine, key_problem

__all__ = ["DmsOptions", "DmsSource", "decode_position", "encode_position"]

log = structlog.get_logger(__name__)

_DEFAULTS = DmsOptions()  # frozen: one shared default is safe
Action = Literal["retry", "skip"]


class DmsSource:
    """Reads DMS output per table in order and records what was staged; see the module docstring."""

    def __init__(
        self,
        store: ObjectStore,
        tables: Mapping[TableId, TableSchema],
        *,
        state: ObjectStore,
        quarantine: Quarantine,
        options: DmsOptions = _DEFAULTS,
        sqs_client: Any = None,
        policies: Mapping[TableId, ColumnPolicies] | None = None,
    ) -> None:
        """``policies``: the tables' column policies, applied to the fields of a bad row before the
        quarantine keeps them (such a table's bad rows are never stored raw)."""
        self.store = store
        self.state = state
        self.quarantine = quarantine
        self.options = options
        self.naming = Naming(options)
        self.bad = BadInput(store, quarantine, options, self._save, policies or {})
        self._tables: dict[TableId, TableState] = {}
        for tid, schema in sorted(tables.items()):
            t = TableState(schema, f"{tid.schema}/{tid.name}/")
            load(state, t)
            self._tables[tid] = t
        self._next_discovery = 0.0
        self._elsewhere: set[TableId] = set()  # tables of the config other tasks own (``owned_elsewhere``)
        self._tmp = tempfile.TemporaryDirectory(prefix="replicator-dms-")
        self.events = EventHints(options.sqs_queue_url, sqs_client) if options.sqs_queue_url else None
        self._txn: Any = None
        if options.preserve_transactions:
            from replicator.sources.dms.txn import TxnFeed

            self._txn = TxnFeed(self)

    # -- Source -------------------------------------------------------------------------------------------

    def schemas(self) -> Sequence[TableSchema]:
        return [t.schema for t in self._tables.values()]

    def read(self) -> Iterator[Change | SchemaChange | ChangeChunk]:
        """Changes after what was read before in this process (after the acknowledged point on start)."""
        if time.monotonic() >= self._next_discovery:
            skip = {self.options.cdc_path.strip("/").split("/")[0]} if self._txn else set()
            known = set(self._tables) | self._elsewhere
            quarantine_unknown_tables(self.store, self.state, self.quarantine, known, skip)
            self._next_discovery = time.monotonic() + self.options.discovery_interval_seconds
        for tid, t in self._tables.items():
            if t.stopped is not None:
                self._report_lag(t)  # a stopped table falls further behind
                continue
            try:
                yield from self._read_table(t)
            except Exception as exc:
                # Storage trouble on one table must not stop the others; the next read() retries it from
                # its in-memory cursor, so nothing is skipped.
                metrics.ERRORS.labels(stage="source", kind=type(exc).__name__).inc()
                log.error(
                    "dms_read_failed", table=str(tid), error=f"{type(exc).__name__}: {exc}", exc_info=True
                )
        if self._txn is not None:
            yield from self._txn.read()

    def wait_for_news(self, seconds: float, stop: threading.Event) -> None:
        """``Notifying``: with an SQS queue, long-poll it for S3 event notifications and return at the
        first (the next read lists every table: a hint only says when to look, never what to read);
        without one, sleep."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if self.events is None or left < 1.0:  # SQS waits whole seconds
                stop.wait(left)
                return
            if self.events.wait(min(left, 2.0)):  # in slices: a stop is heard within 2 s
                return

    def ack(self, positions: Mapping[TableId, Position]) -> None:
        """Record that every change of each table up to its position is staged; persist it. Idempotent."""
        for tid, pos in positions.items():
            t = self._tables.get(tid)
            if t is None or pos.value <= t.acked:
                continue
            t.acked = pos.value
            file_id, row = decode_position(pos)
            consumed: list[str] = []
            while t.runs and t.runs[0].file_id < file_id:
                consumed.append(t.runs.pop(0).file_id)
            t.partial = (file_id, row)
            if t.runs and t.runs[0].file_id == file_id:
                run = t.runs[0]
                if run.complete and row >= run.last_yielded:
                    consumed.append(t.runs.pop(0).file_id)
                    t.partial = None
                    # Files after it that gave nothing (all rows quarantined) need no ack.
                    while t.runs and t.runs[0].complete and t.runs[0].last_yielded == 0:
                        consumed.append(t.runs.pop(0).file_id)
            elif t.done and file_id <= t.done[-1]:
                t.partial = None  # an old position: already covered
            t.mark_done(consumed, self.options.recent_files)
            self._report_lag(t)
            if t.frontier is None or (file_id, row) > t.frontier[:2]:
                t.frontier = (file_id, row, t.partial is None)
            self._save(t)
        if self._txn is not None:
            self._txn.acked()

    def owned_elsewhere(self, tables: Collection[TableId]) -> None:
        """Scale-out: ``tables`` are tables of the config that other tasks replicate; their folders are
        left alone (not read, not quarantined as unknown)."""
        self._elsewhere = set(tables) - set(self._tables)

    def close(self) -> None:
        self._tmp.cleanup()

    def resync(self, table: TableId) -> None:
        """``Resyncable``: forget what was read and acknowledged of ``table`` (persisted at once), so the
        next ``read`` starts again at its first full-load file and then its CDC files."""
        old = self._tables[table]
        self._tables[table] = fresh = TableState(old.schema, old.prefix)
        self._save(fresh)

    # -- operator -----------------------------------------------------------------------------------------

    def problems(self) -> list[dict[str, Any]]:
        """Tables (and the shared transaction feed) stopped until an operator decides, with the reason."""
        out = [{"table": str(tid), **t.stopped} for tid, t in self._tables.items() if t.stopped is not None]
        if self._txn is not None and self._txn.stopped is not None:
            out.append({"table": "*", **self._txn.stopped})
        return out

    def resume(self, table: TableId | None, action: Action) -> None:
        """The operator's decision for a stopped table (``None``: the transaction feed).

        ``retry`` reads the file again from the stop (after the file was fixed or replaced in place);
        ``skip`` leaves the bad row or file in the quarantine and goes on after it. Both are persisted.
        """
        if table is None:
            self._txn.resume(action)
            return
        t = self._tables[table]
        if t.stopped is None:
            return
        if action == "skip":
            t.skipped.setdefault(t.stopped["file"], []).append(t.stopped["row"] or 0)
        log.info("dms_table_resumed", table=str(table), action=action, file=t.stopped["file"])
        t.stopped = None
        self._save(t)

    def stop_table(self, table: TableId, *, reason: str, position: Position, detail: str) -> bool:
        """``Stoppable``: bad input found after the source (a value that does not parse as its type).

        With the table's policy ``quarantine``, or when the operator chose ``skip`` for exactly this row,
        returns False (the row is set aside and the table goes on). Otherwise the table stops like any other
        bad input here (``problems()``, ``resume``) and its cursor goes back to the acknowledged point, so
        that after the operator's decision everything after it is read again; returns True.
        """
        t = self._tables.get(table)
        if t is None:
            return False
        file_id, row = decode_position(position)
        if self.bad.tolerated(t, file_id, row):
            return False
        name = file_id[2:]
        txn = self._txn is not None and name.startswith("CDC_TXN")
        key = self._txn.prefix + name if txn else t.prefix + self.naming.name(file_id)
        t.rewind()
        if txn:
            self._txn.rewound(table)
        self.bad.stop(t, reason, file_id, key, row, detail)
        return True

    # -- reading ------------------------------------------------------------------------------------------

    def _read_table(self, t: TableState) -> Iterator[Change | SchemaChange | ChangeChunk]:
        for file_id, key in self._new_files(t):
            if t.stopped is not None:
                return
            yield from self.read_file(t, file_id, key)

    def read_file(
        self, t: TableState, file_id: str, key: str
    ) -> Iterator[Change | SchemaChange | ChangeChunk]:
        """Yield one file's changes after the table's cursor; quarantine bad input by the table's policy."""
        run = self._run(t, file_id)
        skip = t.frontier[1] if t.frontier and t.frontier[0] == file_id else 0
        last: Position | None = None
        passed = 0  # last bad row let go
        epoch = t.epoch
        try:
            for item in self._decode(t, file_id, key, skip):
                if isinstance(item, (Change, ChangeChunk)):
                    last = item.position if isinstance(item, Change) else item.last
                    yield item
                    if t.epoch != epoch:
                        return  # stopped downstream (stop_table): the cursor was rewound
                elif isinstance(item, SchemaChange):
                    if item.schema != t.schema:
                        t.schema = item.schema
                        yield item
                else:
                    self.bad.quarantine_row(t, key, item)
                    if not self.bad.tolerated(t, file_id, item.row):
                        self.bad.stop(t, item.reason, file_id, key, item.row, item.detail)
                        return
                    passed = item.row
        except BadFile as exc:
            if not self.bad.bad_file(t, file_id, key, exc.reason, exc.detail):
                return
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            # A corrupt or truncated gzip: the rows before the damage went on, the rest cannot.
            if not self.bad.bad_file(t, file_id, key, "bad_compression", f"{type(exc).__name__}: {exc}"):
                return
        finally:
            # The cursor follows what was handed out, also when the consumer stops early (the generator is
            # closed at its yield): the next read() goes on right after it.
            if t.epoch == epoch:
                row = decode_position(last)[1] if last is not None else 0
                run.last_yielded = max(run.last_yielded, row)
                row = max(row, passed)
                if row and (t.frontier is None or (file_id, row) > t.frontier[:2]):
                    t.frontier = (file_id, row, False)
        run.complete = True
        row = t.frontier[1] if t.frontier and t.frontier[0] == file_id else 0
        t.frontier = (file_id, row, True)
        if run.last_yielded == 0 and t.runs and t.runs[0] is run:
            # Nothing yielded and nothing before it is waiting for an ack: consumed right away.
            t.runs.pop(0)
            t.partial = None
            t.mark_done([file_id], self.options.recent_files)
            self._save(t)

    def _decode(
        self, t: TableState, file_id: str, key: str, skip: int
    ) -> Iterator[Change | BadRow | SchemaChange | ChangeChunk]:
        has_op, default_op = self.options.op_mode(file_id[0])
        tid = t.schema.table
        prefix = f"{file_id} "
        with self._open(key) as f:
            if size_of(f) == 0:
                raise BadFile("empty_file", "the file has no bytes (DMS never writes an empty file)")
            if is_parquet(key, self.options):
                yield from decode_parquet(
                    f, tid, t.schema, position_prefix=prefix, has_op=has_op, default_op=default_op,
                    timestamp_column=self.options.timestamp_column_name or None, skip=skip,
                )  # fmt: skip
                return
            gz = is_gzip(f, key)
            yield from decode_csv_columnar(
                stream_opener(f, gz=gz), self.csv_layout(t), position_prefix=prefix, has_op=has_op,
                default_op=default_op, skip=skip, decompressed=gz,
            )  # fmt: skip

    def csv_layout(self, t: TableState) -> CsvLayout:
        o = self.options
        return CsvLayout(
            t.schema.table, t.schema, o.csv_null_value, o.add_column_name, o.timestamp_column_name or None,
            o.csv_delimiter, o.csv_row_delimiter, o.rfc_4180,
            o.csv_no_sup_value if o.use_csv_no_sup_value else None,
        )  # fmt: skip

    def _new_files(self, t: TableState) -> list[tuple[str, str]]:
        """Files to read now, in read order. A late file stops the table (see the module docstring)."""
        found: dict[str, str] = {}
        known = set(t.done) | {r.file_id for r in t.runs if r.complete}
        oldest = {p: next((d for d in t.done if d[0] == p), None) for p in (LOAD, CDC)}
        starts = {self._start_after(t, oldest[LOAD] or oldest[CDC])}
        starts.add(self._start_after(t, oldest[CDC]) if self.naming.key_order_is_time else None)
        for after in starts:
            for info in self.store.list(t.prefix, start_after=after):
                name = info.key[len(t.prefix) :]
                file_id = self.naming.file_id(name)
                floor = oldest[file_id[0]]
                if file_id in known or (floor is not None and file_id < floor):
                    continue  # consumed (below the remembered window: consumed long ago)
                found[file_id] = info.key
                t.pending.setdefault(file_id, info.modified)
        out: list[tuple[str, str]] = []
        for file_id, key in sorted(found.items()):
            problem = "name holds a space or control character" if any(c <= " " for c in key) else None
            if problem is None and key_problem(key) is not None:
                problem = f"{key_problem(key)}; a path, not a file name: not read"
            if problem is not None:
                self.bad.quarantine_file(t, key, "bad_file_name", problem)
                t.mark_done([file_id], self.options.recent_files)
                self._save(t)
            elif t.frontier is not None and file_id < t.frontier[0]:
                if 0 in t.skipped.get(file_id, ()):
                    t.mark_done(
                        [file_id], self.options.recent_files
                    )  # the operator chose to leave it set aside
                    self._save(t)
                    continue
                detail = f"sorts before {t.frontier[0]!r}, which is already read; not applied out of order"
                self.bad.quarantine_file(t, key, "out_of_order", detail)
                self.bad.stop(t, "out_of_order", file_id, key, None, detail)
                return out
            else:
                out.append((file_id, key))
        self._report_lag(t)
        return out

    @staticmethod
    def _report_lag(t: TableState) -> None:
        metrics.SOURCE_LAG_SECONDS.labels(table=str(t.schema.table)).set(lag_seconds(t))

    def _start_after(self, t: TableState, file_id: str | None) -> str | None:
        return t.prefix + self.naming.name(file_id) if file_id else None

    def _run(self, t: TableState, file_id: str) -> Run:
        for r in t.runs:
            if r.file_id == file_id:
                return r
        run = Run(file_id)
        t.runs.append(run)
        return run

    def _open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """The object's bytes as an open file (``objects.open_object``: a local link out of the folder is a
        ``BadFile``, checked on the open descriptor, never on the path alone)."""
        return open_object(self.store, key, Path(self._tmp.name))

    # -- bad input ----------------------------------------------------------------------------------------

    def _save(self, t: TableState) -> None:
        save(self.state, t)
