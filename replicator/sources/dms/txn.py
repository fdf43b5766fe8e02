"""PreserveTransactions feeds: ``CdcPath/CDC_TXN-*.csv`` hold the changes of all tables in commit order.

Each row is ``Op,table,schema,[timestamp,]values...``. Files are read in name order, rows in file order;
a table's rows are yielded only once its full load (its own ``LOAD`` files) is read. Every change carries
the position ``2/<file name> <row>`` (row = the row in the shared file), so positions of each table rise in
commit order and each table resumes exactly after its own acknowledged row.

A file is consumed (state ``_state/dms/_txn.json``) once every table with rows in it has acknowledged its
last one. A table that cannot take its rows now (stopped, or still in full load) is noted; when it can, the
unconsumed files are read again, and every other table skips what it already has by its own position.

Bad rows are quarantined with their byte range in the file. A row that cannot say its table (not UTF-8,
not CSV, too few fields) might be any table's: while any table has column policies, its bytes are not kept.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, BinaryIO, Protocol

from replicator.model import Change, Op, Position, SchemaChange, TableId
from replicator.sources.dms.csvfiles import (
    OPS,
    ROW_DIGITS,
    BadFile,
    BadRow,
    CsvLayout,
    _parse_quoted,
    _records,
    _utf8,
)
from replicator.sources.dms.layout import DmsOptions
from replicator.sources.dms.objects import is_gzip, size_of
from replicator.sources.dms.policy import BadInput, where
from replicator.sources.dms.state import TableState
from replicator.storage import ObjectStore, Quarantine

STATE_KEY = "_state/dms/_txn.json"
FEED = "_txn"  # the quarantine "table" of rows that name no table


class TxnHost(Protocol):
    """What the feed reads of the ``DmsSource`` that owns it. A protocol rather than the class, so that this
    module does not import ``source`` (which imports this one): no import cycle, even for the type checker."""

    options: DmsOptions
    store: ObjectStore  # the DMS output
    state: ObjectStore  # where the feed's document lives
    quarantine: Quarantine
    bad: BadInput
    _tables: dict[TableId, TableState]

    def csv_layout(self, t: TableState) -> CsvLayout: ...

    def _open(self, key: str) -> AbstractContextManager[BinaryIO]: ...


@dataclass(slots=True)
class _TxnRun:
    name: str
    need: dict[TableId, int] = field(default_factory=dict)  # last row yielded per table
    blocked: bool = False  # a table could not take its rows: not consumable until read again
    complete: bool = False


class TxnFeed:
    def __init__(self, src: TxnHost) -> None:
        self.src = src
        self.prefix = src.options.cdc_path.strip("/") + "/"
        self.runs: list[_TxnRun] = []
        self.read_through: str | None = None
        self.waiting: set[TableId] = set()
        self.done: list[str] = []
        self.stopped: dict[str, Any] | None = None
        self.skipped: dict[str, list[int]] = {}
        self.spot = [0, 0]  # the byte offset of the record being read; 1 when the file is gzip
        try:
            doc = json.loads(src.state.get(STATE_KEY))
            self.done, self.stopped = doc["done"], doc.get("stopped")
            self.skipped = doc.get("skipped", {})
        except KeyError:
            pass

    def read(self) -> Iterator[Change | SchemaChange]:
        if self.stopped is not None:
            return
        tables = self.src._tables
        if any(tables[t].load_done() for t in self.waiting):
            self.read_through = None  # read the unconsumed files again for the tables that waited
            self.waiting.clear()
        start = self.prefix + self.done[0] if self.done else None
        seen = {r.name for r in self.runs}
        for info in self.src.store.list(self.prefix + "CDC_TXN", start_after=start):
            name = info.key[len(self.prefix) :]
            if name in self.done or (self.read_through is not None and name <= self.read_through):
                continue
            high = max([*self.done[-1:], *(r.name for r in self.runs)], default="")
            if name not in seen and name < high and 0 not in self.skipped.get(name, ()):
                self._stop("out_of_order", name, None, f"sorts before {high!r}, already read")
                return
            yield from self._read_file(name, info.key)
            if self.stopped is not None:
                return
            self.read_through = name

    def _read_file(self, name: str, key: str) -> Iterator[Change]:
        src, opts = self.src, self.src.options
        run = next((r for r in self.runs if r.name == name), None)
        if run is None:
            run = _TxnRun(name)
            self.runs.append(run)
        run.blocked = False
        file_id = f"2/{name}"
        ts_on = bool(opts.timestamp_column_name)
        marker, delim = opts.csv_null_value, opts.csv_delimiter
        try:
            with src._open(key) as f:
                if size_of(f) == 0:
                    raise BadFile("empty_file", "the file has no bytes (DMS never writes an empty file)")
                gz = is_gzip(f, key)
                stream: IO[bytes] = gzip.GzipFile(fileobj=f, mode="rb") if gz else f  # type: ignore[assignment]
                layout = src.csv_layout(next(iter(src._tables.values())))
                self.spot = spot = [0, int(gz)]  # where the record is (``_records``)
                for row, record in enumerate(_records(stream, layout, spot), start=1):
                    if not record.isascii() and not _utf8(record):
                        self._bad(name, key, row, "invalid_utf8", "row is not valid UTF-8", record)
                    else:
                        try:
                            fields, quoted = (
                                _parse_quoted(record, delim) if '"' in record else (record.split(delim), None)
                            )
                        except csv.Error as exc:
                            self._bad(name, key, row, "csv_syntax", f"CSV cannot be parsed: {exc}", record)
                            fields = []
                        if fields:
                            change = self._change(
                                run, file_id, key, row, fields, quoted, ts_on, marker, record
                            )
                            if change is not None:
                                yield change
                    if self.stopped is not None:
                        return
        except (BadFile, EOFError, gzip.BadGzipFile, OSError) as exc:
            reason = exc.reason if isinstance(exc, BadFile) else "bad_compression"
            src.quarantine.put(table=FEED, source=src.store.uri(key), reason=reason, detail=f"{key}: {exc}")
            if not (opts.bad_input_policy == "quarantine" or 0 in self.skipped.get(name, ())):
                self._stop(reason, name, None, str(exc))
                return
        run.complete = True

    def _change(  # noqa: PLR0917 - one private call site
        self, run: _TxnRun, file_id: str, key: str, row: int, fields: list[str], quoted: list[bool] | None,
        ts_on: bool, marker: str, record: str,
    ) -> Change | None:  # fmt: skip
        src, opts = self.src, self.src.options
        if len(fields) < 3:
            self._bad(run.name, key, row, "column_count", "fewer than 3 fields (Op,table,schema)", record)
            return None
        tid = TableId(fields[2], fields[1])
        t = src._tables.get(tid)
        if t is None:
            src.quarantine.put(
                table=str(tid), source=src.store.uri(key), reason="unknown_table", row=row,
                detail=f"{key} row {row}: {tid} is not in the schemas folder",
                data=record.encode("utf-8", "surrogateescape"), byte_range=self._span(record),
                decompressed=bool(self.spot[1]),
            )  # fmt: skip
            return None
        if not t.load_done():
            self.waiting.add(tid)
            run.blocked = True
            return None
        if t.frontier is not None and (file_id, row) <= t.frontier[:2]:
            return None  # this table has it already
        start = 3 + int(ts_on)
        values: list[str | None] = list(fields[start:])
        reason, detail = "", ""
        op = OPS.get(fields[0])
        commit_time = None
        if len(values) != len(t.schema.columns):
            reason, detail = "column_count", f"expected {len(t.schema.columns)} columns, found {len(values)}"
        elif op is None:
            reason, detail = "unknown_op", f"Op {fields[0][:20]!r} is not I, U or D"
        elif ts_on and fields[3] != marker:
            try:
                commit_time = datetime.fromisoformat(fields[3]).replace(tzinfo=UTC)
            except ValueError:
                reason, detail = "bad_timestamp", f"timestamp {fields[3][:40]!r} does not parse"
        if reason:
            by_column = None
            if len(values) == len(t.schema.columns):  # it splits into the table's columns
                flags = quoted[start:] if quoted is not None else None
                by_column = {
                    n: None if v == marker and not (flags and flags[i]) else v
                    for i, (n, v) in enumerate(zip(t.schema.column_names, values, strict=True))
                }
            data = record.encode("utf-8", "surrogateescape")
            bad = BadRow(row, reason, detail, data, self._span(record), bool(self.spot[1]), None, by_column)
            src.bad.quarantine_row(t, key, bad)
            if not src.bad.tolerated(t, file_id, row):
                src.bad.stop(t, reason, file_id, key, row, detail)
                self.waiting.add(tid)
                run.blocked = True
            else:
                t.frontier = (file_id, row, False)
            return None
        flags = quoted[start:] if quoted is not None else None
        nosup = opts.csv_no_sup_value if opts.use_csv_no_sup_value else None
        gone = [v == nosup and not (flags and flags[i]) for i, v in enumerate(values)]
        unchanged = frozenset(n for n, g in zip(t.schema.column_names, gone, strict=True) if g)
        values = [
            None if g or (v == marker and not (flags and flags[i])) else v
            for i, (v, g) in enumerate(zip(values, gone, strict=True))
        ]
        t.frontier = (file_id, row, False)
        run.need[tid] = row
        position = Position(f"{file_id} {row:0{ROW_DIGITS}d}")
        return Change(tid, op or Op.INSERT, tuple(values), position, commit_time, unchanged)

    def _bad(self, name: str, key: str, row: int, reason: str, detail: str, record: str) -> None:  # noqa: PLR0917
        """A row that names no table: the feed's policy decides. It may be a row of a table with column
        policies: while any table has them, its bytes are not kept (the byte range finds it)."""
        src = self.src
        span, gz = self._span(record), bool(self.spot[1])
        note = f"{key} row {row}: {detail} ({where(BadRow(row, reason, detail, b'', span, gz))})"
        if src.bad.redact:
            note += "; the row's bytes are not kept (a table has column policies): see the source object"
        src.quarantine.put(
            table=FEED, source=src.store.uri(key), reason=reason, row=row, detail=note,
            data=None if src.bad.redact else record.encode("utf-8", "surrogateescape"),
            byte_range=span, decompressed=gz,
        )  # fmt: skip
        if src.options.bad_input_policy != "quarantine" and row not in self.skipped.get(name, ()):
            self._stop(reason, name, row, detail)

    def _span(self, record: str) -> tuple[int, int]:
        """The byte range (offset, length) in its file of the record just read."""
        return self.spot[0], len(record.encode("utf-8", "surrogateescape"))

    def acked(self) -> None:
        """Consume the files every table has acknowledged through."""
        moved = False
        while self.runs and self.runs[0].complete and not self.runs[0].blocked:
            run = self.runs[0]
            file_id = f"2/{run.name}"
            if any(self.src._tables[t].acked < f"{file_id} {r:0{ROW_DIGITS}d}" for t, r in run.need.items()):
                break
            self.runs.pop(0)
            self.done.append(run.name)
            self.skipped.pop(run.name, None)
            moved = True
        if moved:
            self.done = self.done[-self.src.options.recent_files :]
            self._save()

    def rewound(self, table: TableId) -> None:
        """``table``'s cursor went back to its acknowledged point (``DmsSource.stop_table``): the unconsumed
        files are read again for it once it can take rows, and none is consumed before that."""
        self.waiting.add(table)
        for run in self.runs:
            run.blocked = True

    def resume(self, action: str) -> None:
        if self.stopped is None:
            return
        if action == "skip":
            self.skipped.setdefault(self.stopped["file"], []).append(self.stopped["row"] or 0)
        self.stopped = None
        self.read_through = None
        self._save()

    def _stop(self, reason: str, name: str, row: int | None, detail: str) -> None:
        self.stopped = {
            "reason": reason, "file": name, "source": self.src.store.uri(self.prefix + name), "row": row,
            "detail": detail, "since": datetime.now(UTC).isoformat(), "actions": ["retry", "skip"],
        }  # fmt: skip
        self._save()

    def _save(self) -> None:
        doc = {"version": 1, "done": self.done, "stopped": self.stopped, "skipped": self.skipped}
        self.src.state.put(STATE_KEY, json.dumps(doc, indent=1).encode())
