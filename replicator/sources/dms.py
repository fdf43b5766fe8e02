"""The DMS source: files that AWS DMS writes to an S3 target (or a local folder with the same layout).

Layout under the store's root (the DMS BucketFolder): ``schema/table/LOAD00000001.csv`` ... (full load,
hex counter) and ``schema/table/20141029-1134010000.csv`` ... (CDC, named by time). Per table we read all
full-load files in name order, then all CDC files in name order, rows in file order.

Positions (``Position.value``): ``<phase>/<name> <row>``, e.g. ``1/LOAD00000001.csv 0000000042`` and
``2/20141029-1134010000.csv 0000000001``. Phase ``1`` (full load) sorts before ``2`` (CDC); the name is the
key below the table's folder, so names sort as the store lists them; the space ends the name and is lower
than any character a name may hold, so a name that is a prefix of another (``x.csv`` / ``x.csv.gz``) sorts
first, as listed; rows are zero-padded to a fixed width. Names holding a character at or below the space
cannot be encoded and are quarantined (``bad_file_name``).

Progress (the ``state`` store, ``_state/dms/<schema>.<table>.json``, written atomically)::

    {"version": 1, "table": "dbo.t", "done": ["1/LOAD00000001.csv", "2/20141029-1134010000.csv"],
     "partial": {"file": "2/20141029-1135010000.csv", "rows": 42}, "updated_at": "..."}

``done`` holds the most recent handled files (consumed, or set aside as out of order), at most
``DmsOptions.recent_files`` per phase, in read order: every file up to its last entry is handled. ``partial``
is the file after it, whose first ``rows`` rows are acknowledged. Listing starts at the oldest remembered
file of each phase (``start_after``), so it stays cheap however many files the table has, while a late file
that lands among recently consumed ones is still seen: it is not in ``done``, sorts before the progress
point, and is set aside as ``out_of_order`` rather than applied out of order.
"""

from __future__ import annotations

import bisect
import gzip
import json
import tempfile
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import structlog

from replicator.model import Change, Position, TableId, TableSchema
from replicator.obs import metrics
from replicator.quarantine import Quarantine
from replicator.sources.dms_csv import BadFile, BadRow, CsvLayout, decode_csv
from replicator.store import LocalStore, ObjectStore

log = structlog.get_logger(__name__)

STATE_PREFIX = "_state/dms/"
LOAD, CDC = "1", "2"


@dataclass(frozen=True, slots=True)
class DmsOptions:
    """How the DMS endpoint writes its files; field names follow the DMS S3 endpoint settings."""

    include_op_for_full_load: bool = False
    timestamp_column_name: str | None = None  # None or "": no timestamp column
    csv_null_value: str = "NULL"
    add_column_name: bool = False  # a header row naming the columns starts every file
    compression: Literal["none", "gzip"] = "none"  # files ending in .gz are gunzipped either way
    # Not DMS settings: how many consumed files per phase to remember for late-file detection (the
    # listing window), and how often to look for folders of tables we do not replicate.
    recent_files: int = 100
    discovery_interval_seconds: float = 300.0


def encode_position(file_id: str, row: int) -> Position:
    return Position(f"{file_id} {row:010d}")


def decode_position(position: Position) -> tuple[str, int]:
    """``"2/x.csv 0000000042"`` -> ``("2/x.csv", 42)``."""
    file_id, _, row = position.value.rpartition(" ")
    return file_id, int(row)


@dataclass(slots=True)
class _Run:
    """A file read (or being read) in this process and not yet consumed."""

    file_id: str
    last_yielded: int = 0  # row number of the last change yielded, 0 if none
    complete: bool = False  # read to its end


@dataclass(slots=True)
class _Table:
    schema: TableSchema
    prefix: str  # "schema/table/"
    done: list[str] = field(default_factory=list)  # persisted, sorted
    partial: tuple[str, int] | None = None  # persisted
    runs: list[_Run] = field(default_factory=list)
    frontier: tuple[str, int, bool] | None = None  # furthest (file, row, complete) read or acked
    acked: str = ""  # last acknowledged Position.value

    @property
    def key(self) -> str:
        return f"{STATE_PREFIX}{self.schema.table.schema}.{self.schema.table.name}.json"


class DmsSource:
    """Reads DMS output per table in order and records what was staged; see the module docstring."""

    def __init__(
        self,
        store: ObjectStore,
        tables: Mapping[TableId, TableSchema],
        *,
        state: ObjectStore,
        quarantine: Quarantine,
        options: DmsOptions = DmsOptions(),  # frozen: one shared default is safe
    ) -> None:
        self.store = store
        self.state = state
        self.quarantine = quarantine
        self.options = options
        self._tables: dict[TableId, _Table] = {}
        for tid, schema in sorted(tables.items()):
            t = _Table(schema, f"{tid.schema}/{tid.name}/")
            self._load(t)
            self._tables[tid] = t
        self._next_discovery = 0.0
        self._tmp = tempfile.TemporaryDirectory(prefix="replicator-dms-")

    # -- Source -------------------------------------------------------------------------------------------

    def schemas(self) -> Sequence[TableSchema]:
        return [t.schema for t in self._tables.values()]

    def read(self) -> Iterator[Change]:
        """Changes after what was read before in this process (after the acknowledged point on start)."""
        if time.monotonic() >= self._next_discovery:
            self._quarantine_unknown_tables()
            self._next_discovery = time.monotonic() + self.options.discovery_interval_seconds
        for tid, t in self._tables.items():
            try:
                yield from self._read_table(t)
            except Exception as exc:
                # Storage trouble on one table must not stop the others; the next read() retries it from
                # its in-memory cursor, so nothing is skipped.
                metrics.ERRORS.labels(stage="source", kind=type(exc).__name__).inc()
                log.error(
                    "dms_read_failed", table=str(tid), error=f"{type(exc).__name__}: {exc}", exc_info=True
                )

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
                    # Files after it that gave nothing (empty, or all rows quarantined) need no ack.
                    while t.runs and t.runs[0].complete and t.runs[0].last_yielded == 0:
                        consumed.append(t.runs.pop(0).file_id)
            elif t.done and file_id <= t.done[-1]:
                t.partial = None  # an old position: already covered
            self._mark_done(t, consumed)
            if t.frontier is None or (file_id, row) > t.frontier[:2]:
                t.frontier = (file_id, row, t.partial is None)
            self._save(t)

    def close(self) -> None:
        self._tmp.cleanup()

    # -- reading ------------------------------------------------------------------------------------------

    def _read_table(self, t: _Table) -> Iterator[Change]:
        bound = log.bind(table=str(t.schema.table))
        for file_id, key in self._new_files(t, bound):
            run = self._run(t, file_id)
            skip = t.frontier[1] if t.frontier and t.frontier[0] == file_id else 0
            has_op = file_id.startswith(CDC) or self.options.include_op_for_full_load
            layout = CsvLayout(
                t.schema.table, t.schema, self.options.csv_null_value, self.options.add_column_name,
                self.options.timestamp_column_name or None,
            )  # fmt: skip
            last: Change | None = None
            last_bad = 0
            with self._open(key) as stream:
                try:
                    for item in decode_csv(
                        stream, layout, position_prefix=f"{file_id} ", has_op=has_op, skip=skip
                    ):
                        if isinstance(item, BadRow):
                            self._quarantine_row(t, key, item)
                            last_bad = item.row
                            continue
                        last = item
                        yield item
                except BadFile as exc:
                    self._quarantine_file(t, key, exc.reason, exc.detail)
                except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                    # A corrupt or truncated gzip: the rows before the damage went on, the rest cannot.
                    self._quarantine_file(t, key, "bad_compression", f"{type(exc).__name__}: {exc}")
                finally:
                    # The cursor follows what was handed out, also when the consumer stops early (the
                    # generator is closed at its yield): the next read() goes on right after it.
                    row = decode_position(last.position)[1] if last is not None else 0
                    run.last_yielded = max(run.last_yielded, row)
                    if max(row, last_bad):
                        t.frontier = (file_id, max(row, last_bad), False)
            run.complete = True
            row = t.frontier[1] if t.frontier and t.frontier[0] == file_id else 0
            t.frontier = (file_id, row, True)
            if run.last_yielded == 0 and t.runs and t.runs[0] is run:
                # Nothing yielded and nothing before it is waiting for an ack: consumed right away, so
                # an empty file never holds the table's progress back.
                bound.info("dms_file_empty", file=key)
                t.runs.pop(0)
                t.partial = None
                self._mark_done(t, [file_id])
                self._save(t)

    def _new_files(self, t: _Table, bound: structlog.typing.FilteringBoundLogger) -> list[tuple[str, str]]:
        """Files to read now, in read order; late files are set aside here."""
        out: list[tuple[str, str]] = []
        known = set(t.done) | {r.file_id for r in t.runs if r.complete}
        for phase, sub in ((LOAD, "LOAD"), (CDC, "")):
            oldest = next((d for d in t.done if d.startswith(phase)), None)
            after = t.prefix + oldest[2:] if oldest else None
            for info in self.store.list(t.prefix + sub, start_after=after):
                name = info.key[len(t.prefix) :]
                if (phase == CDC) == name.startswith("LOAD"):
                    continue
                file_id = f"{phase}/{name}"
                if file_id in known:
                    continue
                if any(c <= " " for c in name):
                    self._set_aside(
                        t, file_id, info.key, "bad_file_name", "name holds a space or control character"
                    )
                elif t.frontier is not None and file_id < t.frontier[0]:
                    self._set_aside(
                        t, file_id, info.key, "out_of_order",
                        f"sorts before {t.frontier[0]!r}, which is already read; not applied out of order",
                    )  # fmt: skip
                    bound.error("dms_file_out_of_order", file=info.key, progress=t.frontier[0])
                else:
                    out.append((file_id, info.key))
        return out

    def _run(self, t: _Table, file_id: str) -> _Run:
        for r in t.runs:
            if r.file_id == file_id:
                return r
        run = _Run(file_id)
        t.runs.append(run)
        return run

    @contextmanager
    def _open(self, key: str) -> Iterator[IO[bytes]]:
        """A binary stream of the object, never all of it in memory (S3: via a temporary file)."""
        if isinstance(self.store, LocalStore):
            f: IO[bytes] = open(self.store.root / key, "rb")  # noqa: SIM115 - closed below
        else:
            path = Path(self._tmp.name) / "object"
            self.store.download(key, path)
            f = open(path, "rb")  # noqa: SIM115
        try:
            if self.options.compression == "gzip" or key.endswith(".gz"):
                with gzip.GzipFile(fileobj=f, mode="rb") as g:
                    yield g  # type: ignore[misc]
            else:
                yield f
        finally:
            f.close()

    # -- bad input ----------------------------------------------------------------------------------------

    def _quarantine_row(self, t: _Table, key: str, bad: BadRow) -> None:
        self.quarantine.put(
            table=str(t.schema.table), source=self.store.uri(key), reason=bad.reason, row=bad.row,
            detail=f"{t.schema.table} {key} row {bad.row}: {bad.detail}", data=bad.data,
        )  # fmt: skip

    def _quarantine_file(self, t: _Table, key: str, reason: str, detail: str) -> None:
        self.quarantine.put(
            table=str(t.schema.table), source=self.store.uri(key), reason=reason,
            detail=f"{t.schema.table} {key}: {detail}",
        )  # fmt: skip

    def _set_aside(self, t: _Table, file_id: str, key: str, reason: str, detail: str) -> None:
        """Note a file that must not be read, once: it is remembered as handled."""
        metrics.ERRORS.labels(stage="source", kind=reason).inc()
        self.quarantine.put(
            table=str(t.schema.table), source=self.store.uri(key), reason=reason, detail=f"{key}: {detail}"
        )
        self._mark_done(t, [file_id])
        self._save(t)

    def _quarantine_unknown_tables(self) -> None:
        """Note each file of a folder that is no table of ours, once (cursor per folder in the state)."""
        after: str | None = None
        while True:
            first = next(iter(self.store.list("", start_after=after)), None)
            if first is None:
                return
            parts = first.key.split("/")
            if parts[0].startswith("_") and len(parts) > 1:
                after = parts[0] + "0"  # our own state/quarantine sharing the root: skip the folder
                continue
            if len(parts) < 3:
                after = first.key  # a stray key outside any table folder
                continue
            schema, name = parts[0], parts[1]
            after = f"{schema}/{name}0"  # "/" < "0": the first key past this folder
            if TableId(schema, name) in self._tables:
                continue
            self._quarantine_folder(schema, name)

    def _quarantine_folder(self, schema: str, name: str) -> None:
        # One cursor per phase: full-load names sort after CDC names, so one cursor over both would miss
        # CDC files written after the full load.
        key = f"{STATE_PREFIX}_unknown/{schema}.{name}.json"
        try:
            through: dict[str, str] = json.loads(self.state.get(key))["through"]
        except KeyError:
            through = {}
        prefix = f"{schema}/{name}/"
        moved = dict(through)
        for phase, sub in ((LOAD, "LOAD"), (CDC, "")):
            for info in self.store.list(prefix + sub, start_after=through.get(phase)):
                if (phase == CDC) == info.key[len(prefix) :].startswith("LOAD"):
                    continue
                self.quarantine.put(
                    table=f"{schema}.{name}",
                    source=self.store.uri(info.key),
                    reason="unknown_table",
                    detail=f"{info.key}: {schema}.{name} is not in the schemas folder; add it to replicate",
                )
                moved[phase] = info.key
        if moved != through:
            self.state.put(key, json.dumps({"version": 1, "through": moved}).encode())

    # -- state --------------------------------------------------------------------------------------------

    def _mark_done(self, t: _Table, file_ids: list[str]) -> None:
        for f in file_ids:
            if f not in t.done:
                bisect.insort(t.done, f)
        for phase in (LOAD, CDC):
            mine = [d for d in t.done if d.startswith(phase)]
            for old in mine[: max(0, len(mine) - self.options.recent_files)]:
                t.done.remove(old)

    def _load(self, t: _Table) -> None:
        try:
            doc = json.loads(self.state.get(t.key))
        except KeyError:
            return
        t.done = sorted(doc["done"])
        p = doc.get("partial")
        t.partial = (p["file"], int(p["rows"])) if p else None
        if t.partial:
            t.frontier = (t.partial[0], t.partial[1], False)
            t.acked = encode_position(*t.partial).value
        elif t.done:
            t.frontier = (t.done[-1], 0, True)

    def _save(self, t: _Table) -> None:
        doc = {
            "version": 1,
            "table": str(t.schema.table),
            "done": t.done,
            "partial": {"file": t.partial[0], "rows": t.partial[1]} if t.partial else None,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        self.state.put(t.key, json.dumps(doc, indent=1).encode())
