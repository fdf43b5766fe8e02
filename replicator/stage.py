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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog

from replicator.buffer import ChunkedChanges
from replicator.faults import crash_point
from replicator.model import (
    COMMIT_TIME_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    SEQ_COLUMN,
    UNCHANGED_COLUMN,
    Batch,
    Change,
    ChangeChunk,
    Manifest,
    Op,
    Position,
    TableId,
    TableSchema,
)
from replicator.obs import metrics
from replicator.policies import ColumnPolicies
from replicator.policies import apply as apply_policies
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
    index: int  # of the change in its batch
    change: Change
    column: str
    detail: str


class BatchRejected(Exception):
    """The batch holds a value that does not parse and the caller chose to stop: nothing was written."""

    def __init__(self, row: RejectedRow) -> None:
        super().__init__(row.detail)
        self.row = row


# The text form of a batch: the table's columns as wire text, then op, position and commit time.
_META_TEXT = [
    pa.field(OP_COLUMN, pa.string()),
    pa.field(POSITION_COLUMN, pa.string()),
    pa.field(COMMIT_TIME_COLUMN, pa.timestamp("us", tz="UTC")),
]


def batch_to_arrow(batch: Batch) -> tuple[pa.Table, list[RejectedRow]]:
    """Build the staged Arrow table; rows whose values do not parse as their types are returned apart."""
    if isinstance(batch.changes, ChunkedChanges) and _columnar(batch.schema, batch.changes):
        return _build_columnar(batch.schema, batch.changes)
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


def _columnar(schema: TableSchema, changes: ChunkedChanges) -> bool:
    """Rows and chunks can be staged column-wise (no unchanged columns to fill, every row full width)."""
    width = len(schema.columns)
    return not any(
        isinstance(p, Change) and (p.unchanged or len(p.values) != width or p.op is Op.TRUNCATE)
        for p in changes.parts
    )


def _build_columnar(schema: TableSchema, changes: ChunkedChanges) -> tuple[pa.Table, list[RejectedRow]]:
    text = _text_table(schema, changes.parts)
    original = pa.array(range(text.num_rows), pa.int64())  # row -> index in the batch, as rows go
    rejected: list[RejectedRow] = []
    while True:
        try:
            return _typed(schema, text), rejected
        except _BadValue as bad:
            index = original[bad.row].as_py()
            rejected.append(RejectedRow(index, changes[index], bad.column, bad.detail))
            text = pa.concat_tables([text.slice(0, bad.row), text.slice(bad.row + 1)])
            original = pa.concat_arrays([original.slice(0, bad.row), original.slice(bad.row + 1)])


def _text_schema(schema: TableSchema) -> pa.Schema:
    return pa.schema([pa.field(c.name, pa.string()) for c in schema.columns] + _META_TEXT)


def _text_table(schema: TableSchema, parts: Sequence[Change | ChangeChunk]) -> pa.Table:
    """Rows and chunks as one text table (rows transposed per run, chunks taken as they are)."""
    target = _text_schema(schema)
    tables: list[pa.Table] = []
    run: list[Change] = []
    for p in [*parts, None]:
        if isinstance(p, Change):
            run.append(p)
            continue
        if run:
            columns = [pa.array(list(v), pa.string()) for v in zip(*(c.values for c in run), strict=True)]
            columns.append(pa.array([c.op.value for c in run], pa.string()))
            columns.append(pa.array([c.position.value for c in run], pa.string()))
            columns.append(pa.array([c.commit_time for c in run], pa.timestamp("us", tz="UTC")))
            tables.append(pa.Table.from_arrays(columns, schema=target))
            run = []
        if p is not None:
            data = p.data
            n = data.num_rows
            names = set(data.column_names)
            columns = [
                data.column(f.name).cast(f.type) if f.name in names else pa.nulls(n, f.type) for f in target
            ]
            tables.append(pa.Table.from_arrays(columns, schema=target))
    return pa.concat_tables(tables)


def _typed(schema: TableSchema, text: pa.Table) -> pa.Table:
    n = text.num_rows
    arrays: list[pa.Array | pa.ChunkedArray] = []
    for col in schema.columns:
        try:
            arrays.append(text_to_arrow(text.column(col.name), col.type))
        except ValueError as exc:
            raise _BadValue(_row_of(str(exc)), col.name, f"column {col.name}: {exc}") from None
    arrays.append(text.column(OP_COLUMN))
    arrays.append(pa.array(range(n), pa.int64()))
    arrays.append(text.column(POSITION_COLUMN))
    arrays.append(text.column(COMMIT_TIME_COLUMN))
    arrays.append(pa.nulls(n, pa.list_(pa.string())))
    return pa.Table.from_arrays(arrays, schema=arrow_schema(schema))


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


def _counts(ops: pa.ChunkedArray) -> dict[str, int]:
    return {str(v["values"]): int(v["counts"]) for v in pc.value_counts(ops).to_pylist()}


def table_prefix(table: TableId) -> str:
    return f"{BATCHES}{table}/"


class Stager:
    """Writes batches to the staging store and lists what is staged but not yet applied."""

    def __init__(
        self,
        store: ObjectStore,
        quarantine: Quarantine,
        policies: Mapping[TableId, ColumnPolicies] | None = None,
    ) -> None:
        self.store = store
        self.quarantine = quarantine
        self.policies = dict(policies or {})

    def stage(self, batch: Batch, *, keep: Callable[[RejectedRow], bool] | None = None) -> Manifest:
        """Write ``batch`` durably. When this returns, the source may be told its positions are done.

        A row whose value does not parse as its type is quarantined; ``keep(row)`` (default: always True)
        says whether the batch goes on without it. When it says False, nothing is written and
        ``BatchRejected`` is raised (the row is in the quarantine either way).
        """
        started = time.perf_counter()
        # Column policies first: a dropped, nulled or hashed value never reaches Arrow, Parquet or the store.
        batch = apply_policies(batch, self.policies.get(batch.table))
        table, rejected = batch_to_arrow(batch)
        for r in rejected:
            self.quarantine.put(
                table=str(batch.table),
                source=f"{batch.table} position {r.change.position}",
                reason="type_mismatch",
                detail=r.detail,
                data=json.dumps({"op": r.change.op.value, "values": list(r.change.values)}).encode(),
                row=r.index,
            )
            if keep is not None and not keep(r):
                raise BatchRejected(r)
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd", compression_level=1, write_statistics=False)
        data = sink.getvalue()
        base = f"{table_prefix(batch.table)}{batch.first.value.encode().hex()}-{batch.id}"
        ops = _counts(table.column(OP_COLUMN))
        times = pc.min_max(table.column(COMMIT_TIME_COLUMN)).as_py() if table.num_rows else {}
        manifest = Manifest(
            table=batch.table,
            batch_id=batch.id,
            first=batch.first,
            last=batch.last,
            rows=table.num_rows,
            inserts=ops.get("I", 0),
            updates=ops.get("U", 0),
            deletes=ops.get("D", 0),
            bytes=len(data),
            data_key=base + ".parquet",
            columns=tuple((c.name, str(c.type)) for c in batch.schema.columns),
            primary_key=batch.schema.primary_key,
            min_commit_time=times.get("min"),
            max_commit_time=times.get("max"),
            staged_at=datetime.now(UTC),
        )
        self.store.put(manifest.data_key, data)
        crash_point("mid_stage")
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
        crash_point("mid_remove")
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
