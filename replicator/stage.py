"""Batch -> one Parquet file (zstd) plus a manifest in the staging store.

Layout under the staging root::

    batches/<schema>.<table>/<hex(first position)>-<batch id>.parquet
    batches/<schema>.<table>/<hex(first position)>-<batch id>.json      (the manifest, written last)

The hex of the first position's UTF-8 bytes sorts exactly like the position itself, and ``-`` sorts before
every hex digit, so a plain key listing returns a table's batches oldest first. A batch exists only once its
manifest does: a crash between the two writes leaves an orphan Parquet file that is simply rewritten.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from replicator.model import (
    COMMIT_TIME_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    SEQ_COLUMN,
    UNCHANGED_COLUMN,
    Batch,
    Change,
    Manifest,
    Op,
    Position,
    TableId,
    TableSchema,
)
from replicator.obs import metrics
from replicator.quarantine import Quarantine
from replicator.store import ObjectStore
from replicator.types import text_to_arrow

log = structlog.get_logger(__name__)

BATCHES = "batches/"
METADATA_FIELDS = [
    pa.field(OP_COLUMN, pa.string(), nullable=False),
    pa.field(SEQ_COLUMN, pa.int64(), nullable=False),
    pa.field(POSITION_COLUMN, pa.string(), nullable=False),
    pa.field(COMMIT_TIME_COLUMN, pa.timestamp("us", tz="UTC")),
    pa.field(UNCHANGED_COLUMN, pa.list_(pa.string())),
]


def arrow_schema(schema: TableSchema) -> pa.Schema:
    """The staged file's schema: the table's columns in order, then the metadata columns."""
    return pa.schema([pa.field(c.name, c.type.arrow) for c in schema.columns] + METADATA_FIELDS)


@dataclass(frozen=True, slots=True)
class RejectedRow:
    index: int
    change: Change
    column: str
    detail: str


def batch_to_arrow(batch: Batch) -> tuple[pa.Table, list[RejectedRow]]:
    """Build the staged Arrow table; rows whose values do not parse as their types are returned apart."""
    changes = list(batch.changes)
    if changes[0].op is Op.TRUNCATE:
        # A truncate carries no row; stage one all-NULL row whose _op says 'T'.
        blank = (None,) * len(batch.schema.columns)
        changes = [Change(c.table, c.op, blank, c.position, c.commit_time) for c in changes]
    if any(c.unchanged for c in changes):
        changes = _fill_unchanged_from_earlier(batch.schema, changes)
    rejected: list[RejectedRow] = []
    while True:
        try:
            return _build(batch.schema, changes), rejected
        except _BadValue as bad:
            rejected.append(RejectedRow(bad.row, changes[bad.row], bad.column, bad.detail))
            del changes[bad.row]


class _BadValue(Exception):
    def __init__(self, row: int, column: str, detail: str) -> None:
        super().__init__(detail)
        self.row, self.column, self.detail = row, column, detail


def _build(schema: TableSchema, changes: Sequence[Change]) -> pa.Table:
    n = len(changes)
    width = len(schema.columns)
    columns_text: list[Sequence[str | None]]
    if n:
        for c in changes:
            if len(c.values) != width:
                raise _BadValue(changes.index(c), "*", f"{len(c.values)} values for {width} columns")
        columns_text = list(zip(*(c.values for c in changes), strict=True))
    else:
        columns_text = [() for _ in schema.columns]
    arrays: list[pa.Array] = []
    for col, text in zip(schema.columns, columns_text, strict=True):
        try:
            arrays.append(text_to_arrow(list(text), col.type))
        except ValueError as exc:
            row = _row_of(str(exc))
            raise _BadValue(row, col.name, f"column {col.name}: {exc}") from None
    arrays.append(pa.array([c.op.value for c in changes], pa.string()))
    arrays.append(pa.array(range(n), pa.int64()))
    arrays.append(pa.array([c.position.value for c in changes], pa.string()))
    arrays.append(pa.array([c.commit_time for c in changes], pa.timestamp("us", tz="UTC")))
    arrays.append(
        pa.array([sorted(c.unchanged) if c.unchanged else None for c in changes], pa.list_(pa.string()))
    )
    return pa.Table.from_arrays(arrays, schema=arrow_schema(schema))


def _row_of(message: str) -> int:
    # text_to_arrow says "row N: ..." for the first value that does not parse.
    head = message.split(":", 1)[0]
    return int(head.removeprefix("row ")) if head.startswith("row ") else 0


def _fill_unchanged_from_earlier(schema: TableSchema, changes: list[Change]) -> list[Change]:
    """An update that did not send a column (unchanged TOAST) takes it from an earlier change of the same key
    in this batch, so the merge only ever needs "keep the target's value" for what is still unchanged."""
    names = schema.column_names
    key_idx = [names.index(k) for k in schema.primary_key]
    # key -> (values, columns still unknown) of the latest change of that key seen so far in the batch
    latest: dict[tuple[str | None, ...], tuple[tuple[str | None, ...], frozenset[str]]] = {}
    out: list[Change] = []
    for change in changes:
        c = change
        key = tuple(c.values[i] for i in key_idx)
        if c.op is Op.DELETE:
            latest.pop(key, None)
            out.append(c)
            continue
        if c.unchanged and key in latest:
            prev, prev_unknown = latest[key]
            values = tuple(
                prev[i] if n in c.unchanged and n not in prev_unknown else v
                for i, (n, v) in enumerate(zip(names, c.values, strict=True))
            )
            c = Change(c.table, c.op, values, c.position, c.commit_time, c.unchanged & prev_unknown)
        latest[key] = (c.values, c.unchanged)
        out.append(c)
    return out


def table_prefix(table: TableId) -> str:
    return f"{BATCHES}{table}/"


class Stager:
    """Writes batches to the staging store and lists what is staged but not yet applied."""

    def __init__(self, store: ObjectStore, quarantine: Quarantine) -> None:
        self.store = store
        self.quarantine = quarantine

    def stage(self, batch: Batch) -> Manifest:
        """Write ``batch`` durably. When this returns, the source may be told its positions are done."""
        started = time.perf_counter()
        table, rejected = batch_to_arrow(batch)
        for r in rejected:
            self.quarantine.put(
                table=str(batch.table),
                source=f"batch {batch.id} position {r.change.position}",
                reason="type_mismatch",
                detail=r.detail,
                data=json.dumps({"op": r.change.op.value, "values": list(r.change.values)}).encode(),
                row=r.index,
            )
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd", compression_level=1, write_statistics=False)
        data = sink.getvalue()
        base = f"{table_prefix(batch.table)}{batch.first.value.encode().hex()}-{batch.id}"
        ops = table.column(OP_COLUMN).to_pylist() if table.num_rows else []
        times = [c.commit_time for c in batch.changes if c.commit_time is not None]
        manifest = Manifest(
            table=batch.table,
            batch_id=batch.id,
            first=batch.first,
            last=batch.last,
            rows=table.num_rows,
            inserts=ops.count("I"),
            updates=ops.count("U"),
            deletes=ops.count("D"),
            bytes=len(data),
            data_key=base + ".parquet",
            columns=tuple((c.name, str(c.type)) for c in batch.schema.columns),
            primary_key=batch.schema.primary_key,
            min_commit_time=min(times) if times else None,
            max_commit_time=max(times) if times else None,
            staged_at=datetime.now(UTC),
        )
        self.store.put(manifest.data_key, data)
        self.store.put(base + ".json", encode_manifest(manifest))
        name = str(batch.table)
        metrics.BATCHES_STAGED.labels(table=name).inc()
        metrics.BATCH_ROWS.labels(table=name).observe(manifest.rows)
        metrics.BATCH_BYTES.labels(table=name).observe(manifest.bytes)
        for op, count in (
            ("insert", manifest.inserts),
            ("update", manifest.updates),
            ("delete", manifest.deletes),
        ):
            if count:
                metrics.CHANGES_STAGED.labels(table=name, op=op).inc(count)
        metrics.STAGE_SECONDS.labels(table=name).observe(time.perf_counter() - started)
        return manifest

    def pending(self, table: TableId) -> Iterator[Manifest]:
        """Staged batches of ``table`` still in the store, oldest first."""
        for info in self.store.list(table_prefix(table)):
            if info.key.endswith(".json"):
                yield decode_manifest(self.store.get(info.key))

    def staged_tables(self) -> set[TableId]:
        tables = set()
        for info in self.store.list(BATCHES):
            name = info.key[len(BATCHES) :].split("/", 1)[0]
            tables.add(TableId.parse(name))
        return tables

    def remove(self, manifest: Manifest) -> None:
        """Forget an applied batch: manifest first, so a crash in between never leaves a manifest whose
        data is gone."""
        self.store.delete(manifest.data_key.removesuffix(".parquet") + ".json")
        self.store.delete(manifest.data_key)


def encode_manifest(m: Manifest) -> bytes:
    doc: dict[str, Any] = {
        "table": str(m.table),
        "batch_id": m.batch_id,
        "first": m.first.value,
        "last": m.last.value,
        "rows": m.rows,
        "inserts": m.inserts,
        "updates": m.updates,
        "deletes": m.deletes,
        "bytes": m.bytes,
        "data_key": m.data_key,
        "columns": [list(c) for c in m.columns],
        "primary_key": list(m.primary_key),
        "min_commit_time": m.min_commit_time.isoformat() if m.min_commit_time else None,
        "max_commit_time": m.max_commit_time.isoformat() if m.max_commit_time else None,
        "staged_at": m.staged_at.isoformat(),
    }
    return json.dumps(doc, indent=1).encode()


def decode_manifest(data: bytes) -> Manifest:
    d = json.loads(data)

    def ts(v: str | None) -> datetime | None:
        return datetime.fromisoformat(v) if v else None

    return Manifest(
        table=TableId.parse(d["table"]),
        batch_id=d["batch_id"],
        first=Position(d["first"]),
        last=Position(d["last"]),
        rows=d["rows"],
        inserts=d["inserts"],
        updates=d["updates"],
        deletes=d["deletes"],
        bytes=d["bytes"],
        data_key=d["data_key"],
        columns=tuple((c[0], c[1]) for c in d["columns"]),
        primary_key=tuple(d["primary_key"]),
        min_commit_time=ts(d["min_commit_time"]),
        max_commit_time=ts(d["max_commit_time"]),
        staged_at=datetime.fromisoformat(d["staged_at"]),
    )
