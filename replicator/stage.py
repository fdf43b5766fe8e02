"""Batch -> one Parquet file (zstd) plus a manifest in the staging store.

Layout under the staging root::

    batches/<schema>.<table>/<hex(first position)>-<batch id>.parquet
    batches/<schema>.<table>/<hex(first position)>-<batch id>.json      (the manifest, written last)

The hex of the first position's UTF-8 bytes sorts exactly like the position itself, and ``-`` sorts before
every hex digit, so a plain key listing returns a table's batches oldest first. A batch exists only once its
manifest does: a crash between the two writes leaves an orphan Parquet file that is simply rewritten.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, overload

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog

from replicator.buffer import ChunkedChanges
from replicator.model import (
    COMMIT_TIME_COLUMN,
    FROM_SEQ_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    SEQ_COLUMN,
    UNCHANGED_COLUMN,
    Batch,
    Change,
    ChangeChunk,
    Column,
    Manifest,
    Op,
    Position,
    TableId,
    TableSchema,
)
from replicator.obs import metrics
from replicator.schema import ColumnPolicies, null_key_mask, resolve_unchanged, typed_column
from replicator.schema import apply as apply_policies
from replicator.storage import ObjectStore, Quarantine, crash_point
from replicator.values import LogicalType

log = structlog.get_logger(__name__)

BATCHES = "batches/"
_ROW_GROUP_BYTES = 8 << 20
_SINK_BUFFER = 4 << 20  # bytes written to the store's file at a time (see _parquet)
_SMALL_VALUES = 1024  # bytes per value on average, at most, for a column to be dictionary-encoded
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
    """A change the stage set aside: its index in the batch, where it is, and why."""

    index: int  # of the change in its batch
    table: TableId
    position: Position
    column: str
    detail: str
    reason: str = "type_mismatch"  # the quarantine's and the metric's label
    changes: Sequence[Change] = field(default=(), repr=False, compare=False)

    @property
    def change(self) -> Change:
        """The change itself (built on demand: a columnar batch holds no ``Change`` objects)."""
        return self.changes[self.index]


_FIELDS = ("row", "position", "column", "reason", "detail", "op")  # then "values", a struct of the row


class RejectedRows(Sequence[RejectedRow]):
    """The changes a batch set aside, in batch order, held column-wise in ``data``, which is also what the
    quarantine stores: ``row`` (index of the change in the batch), ``position``, ``column``, ``reason``,
    ``detail``, ``op`` and ``values`` (a struct of the row's wire text, after column policies). A
    ``RejectedRow`` is built only when asked for: a batch with many bad rows builds no objects for them."""

    def __init__(self, table: TableId, data: pa.Table | None = None, changes: Sequence[Change] = ()) -> None:
        self.table = table
        self.data = data if data is not None else _quarantine_data([[]] * 6, pa.struct([]))
        self.changes = changes
        self.bad_columns: frozenset[str] = frozenset()  # every column with a value that did not parse

    def __len__(self) -> int:
        return int(self.data.num_rows)

    @overload
    def __getitem__(self, i: int) -> RejectedRow: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[RejectedRow]: ...
    def __getitem__(self, i: int | slice) -> RejectedRow | Sequence[RejectedRow]:
        if isinstance(i, slice):
            return list(self)[i]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return next(self._rows(i, 1))

    def __iter__(self) -> Iterator[RejectedRow]:
        return self._rows(0, len(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def _rows(self, start: int, n: int) -> Iterator[RejectedRow]:
        for at in range(start, start + n, 4096):  # in bulk: a value at a time from Arrow costs more
            piece = self.data.slice(at, min(4096, start + n - at)).select(list(_FIELDS[:5]))
            for row, pos, column, reason, detail in zip(*(c.to_pylist() for c in piece.columns), strict=True):
                yield RejectedRow(row, self.table, Position(pos), column, detail, reason, self.changes)


def _quarantine_data(fields: Sequence[Sequence[Any] | pa.Array | pa.ChunkedArray], values: Any) -> pa.Table:
    """The quarantine's table from its ``_FIELDS`` columns (in that order) and ``values`` (a struct array,
    or the struct type of an empty table)."""
    types = (pa.int64(), pa.string(), pa.string(), pa.string(), pa.string(), pa.string())
    arrays = [
        a if isinstance(a, pa.Array | pa.ChunkedArray) else pa.array(a, t)
        for a, t in zip(fields, types, strict=True)
    ]
    struct = values if isinstance(values, pa.Array) else pa.array([], values)
    return pa.Table.from_arrays([*arrays, struct], names=[*_FIELDS, "values"])


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


def batch_to_arrow(batch: Batch, *, suspect: Set[str] = frozenset()) -> tuple[pa.Table, RejectedRows]:
    """Build the staged Arrow table. Changes with a value that does not parse as its type, a null primary
    key or the wrong number of values are returned apart (all the rows a change makes go together), in
    batch order; finding them costs a few bulk casts, however many there are. ``suspect``: columns that
    had bad values in the table's last batch (``typed_column``)."""
    schema = batch.schema
    if isinstance(batch.changes, ChunkedChanges) and _columnar(schema, batch.changes):
        text = _text_table(schema, batch.changes.parts)
        return _finish(schema, text, _Rows(), batch.changes, suspect)
    changes = list(batch.changes)
    if changes[0].op is Op.TRUNCATE:
        # A truncate carries no row; stage one all-NULL row whose _op says 'T'.
        blank = (None,) * len(schema.columns)
        changes = [Change(c.table, c.op, blank, c.position, c.commit_time) for c in changes]
    width = len(schema.columns)
    rejected: list[RejectedRow] = []
    kept: list[int] = []
    for i, c in enumerate(changes):
        if len(c.values) == width and (c.prior is None or len(c.prior) == width):
            kept.append(i)
        else:
            detail = f"{len(c.values)} values for {width} columns"
            rejected.append(RejectedRow(i, c.table, c.position, "*", detail, "field_count", changes))
    if any(c.unchanged or c.prior is not None for c in changes):
        rows, origin, source = resolve_unchanged(schema, [changes[i] for i in kept])
        unchanged = [sorted(r.unchanged) if r.unchanged else None for r in rows]
        described = _Rows([kept[s] for s in source], origin, unchanged)
    else:  # every row full: nothing to resolve (the common case)
        rows = [changes[i] for i in kept] if rejected else changes
        described = _Rows(kept if rejected else None)
    table, more = _finish(schema, _rows_text(schema, rows), described, changes, suspect)
    if not rejected:
        return table, more
    every = sorted([*rejected, *more], key=lambda r: r.index)
    merged = RejectedRows(batch.table, _quarantine_rows(schema, every), changes)
    merged.bad_columns = more.bad_columns
    return table, merged


@dataclass(slots=True)
class _Rows:
    """What each row of a batch's text table stands for: the index of its change in the batch (None: row
    ``i`` is change ``i``), and (rows path only) the row supplying its unchanged columns
    (``resolve_unchanged``) and its unchanged list."""

    change: list[int] | None = None
    origin: list[int | None] | None = None
    unchanged: list[list[str] | None] | None = None


@dataclass(frozen=True, slots=True)
class _Problem:
    """A kind of bad row ``_finish`` found: its column, reason, and the type the value is not (None: a
    null primary key)."""

    column: str
    reason: str
    type: LogicalType | None = None

    def detail(self, text: pa.ChunkedArray) -> pa.ChunkedArray | pa.Scalar:
        """The quarantine's detail for rows with this problem, ``text`` being their values."""
        if self.type is None:
            return pa.scalar(f"primary key column {self.column} is null")
        long = pc.max(pc.binary_length(text)).as_py() or 0
        shown = pc.utf8_slice_codeunits(text, 0, 80) if long > 80 else text
        return pc.binary_join_element_wise(
            f"column {self.column}: '", shown, f"' is not a valid {self.type}", ""
        )


def _noted(
    bad: pa.BooleanArray | None, first: pa.Array | None, mask: pa.BooleanArray, problem: int
) -> tuple[pa.BooleanArray, pa.Array]:
    """The bad rows with ``mask``'s added, and per row the index of its first problem (null: none yet)."""
    mask = pc.fill_null(mask, False)
    if isinstance(mask, pa.ChunkedArray):  # a key column staged as text
        mask = mask.combine_chunks()
    here = pa.scalar(problem, pa.int32())
    if bad is None or first is None:
        return mask, pc.if_else(mask, here, pa.scalar(None, pa.int32()))
    return pc.or_(bad, mask), pc.if_else(pc.and_(mask, pc.invert(bad)), here, first)


def _finish(
    schema: TableSchema, text: pa.Table, rows: _Rows, changes: Sequence[Change], suspect: Set[str]
) -> tuple[pa.Table, RejectedRows]:
    """Type the text table; set aside every change that has a bad row; number and assemble the rest.

    Bad rows are tracked column-wise (a mask, and per row the index of its first problem), so a batch
    with many of them costs a few bulk operations more than a clean one, not work per row."""
    n = text.num_rows
    typed: list[pa.Array | pa.ChunkedArray] = []
    bad: pa.BooleanArray | None = None
    first: pa.Array | None = None  # per row: index in ``problems`` of its first problem
    problems: list[_Problem] = []
    for col in schema.columns:
        chunked = text.column(col.name)
        if pa.types.is_string(col.type.arrow):
            typed.append(chunked)  # staged as sent: nothing to parse, and no copy of (large) values made
            continue
        column = chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()
        array, mask = typed_column(column, col.type, suspect=col.name in suspect, as_mask=True)
        typed.append(array)
        if mask is not None:
            bad, first = _noted(bad, first, mask, len(problems))
            problems.append(_Problem(col.name, "type_mismatch", col.type))
    rejected = RejectedRows(changes[0].table if changes else schema.table, None, changes)
    rejected.bad_columns = frozenset(p.column for p in problems)
    if schema.primary_key and n:
        not_truncate = pc.fill_null(pc.not_equal(text.column(OP_COLUMN), Op.TRUNCATE.value), True)
        keys = [typed[schema.column_names.index(k)] for k in schema.primary_key]
        if pc.any(pc.and_(null_key_mask(keys), not_truncate)).as_py():
            for k, a in zip(schema.primary_key, keys, strict=True):
                bad, first = _noted(bad, first, pc.and_(pc.is_null(a), not_truncate), len(problems))
                problems.append(_Problem(k, "null_key"))
    if bad is None or first is None:
        return _assemble(schema, typed, text, rows), rejected
    if rows.origin is None:  # one row per change, in order: a change's first bad row is its row
        firsts = pc.indices_nonzero(bad).cast(pa.int64())
        dropped = firsts if rows.change is None else pa.array(rows.change, pa.int64()).take(firsts)
        keep = pc.invert(bad)
    else:  # a key change makes two rows: the change's first bad row speaks for it
        assert rows.change is not None
        at: dict[int, int] = {}
        for r in pc.indices_nonzero(bad).to_pylist():
            at.setdefault(rows.change[r], r)
        firsts = pa.array([at[i] for i in sorted(at)], pa.int64())
        change_of = pa.array(rows.change, pa.int64())
        dropped = change_of.take(firsts)
        keep = pc.invert(pc.is_in(change_of, value_set=dropped))
    which = first.take(firsts)
    taken = text.select([*schema.column_names, POSITION_COLUMN, OP_COLUMN]).take(firsts)
    detail: Any = pa.nulls(len(firsts), pa.string())
    counts = {int(v["values"]): int(v["counts"]) for v in pc.value_counts(which).to_pylist()}
    for i, problem in enumerate(problems):
        if i not in counts:  # every row it has has an earlier problem too
            continue
        shown = problem.detail(taken.column(problem.column))
        if counts[i] == len(firsts) and problem.type is not None:  # every row's problem
            detail = shown
        else:
            detail = pc.if_else(pc.equal(which, i), shown, detail)
    values = pa.StructArray.from_arrays(
        [taken.column(c.name).combine_chunks() for c in schema.columns], names=list(schema.column_names)
    ) if schema.columns else pa.array([{}] * len(firsts), pa.struct([]))  # fmt: skip
    where = pa.array([p.column for p in problems], pa.string()).take(which)
    reason = pa.array([p.reason for p in problems], pa.string()).take(which)
    fields = [dropped, taken.column(POSITION_COLUMN), where, reason, detail, taken.column(OP_COLUMN)]
    rejected.data = _quarantine_data(fields, values)
    typed = [a.filter(keep) for a in typed]
    meta = text.select([m.name for m in _META_TEXT]).filter(keep)  # what ``_assemble`` takes of the text
    return _assemble(schema, typed, meta, _kept_rows(rows, keep)), rejected


def _row_numbers(n: int) -> pa.Array:
    """0..n-1 as int64, built by Arrow (``pa.array(range(n))`` costs ~10 ms per 100k rows in Python)."""
    return pc.indices_nonzero(pc.fill_null(pa.nulls(n, pa.bool_()), True)).cast(pa.int64())


def _quarantine_rows(schema: TableSchema, rejected: Sequence[RejectedRow]) -> pa.Table:
    """The quarantine's data for rejected rows from their ``Change`` objects (the general way, for changes
    that never made it into a text table: the wrong number of values)."""
    names = list(schema.column_names)
    cs = [r.change for r in rejected]
    values = pa.array(
        [dict(zip(names, [*c.values, *[None] * len(names)][: len(names)], strict=True)) for c in cs],
        pa.struct([pa.field(n, pa.string()) for n in names]),
    )
    fields = [
        [r.index for r in rejected], [r.position.value for r in rejected], [r.column for r in rejected],
        [r.reason for r in rejected], [r.detail for r in rejected], [c.op.value for c in cs],
    ]  # fmt: skip
    return _quarantine_data(fields, values)


def _kept_rows(rows: _Rows, keep: pa.Array) -> _Rows:
    """``rows`` without the rows not kept; origins renumbered (one that was dropped becomes None)."""
    if rows.origin is None:
        return _Rows()  # the kept rows' changes are not asked for again
    assert rows.change is not None
    kept = keep.to_pylist()
    change = [c for c, k in zip(rows.change, kept, strict=True) if k]
    renumber: list[int | None] = []
    at = 0
    for k in kept:
        renumber.append(at if k else None)
        at += k
    origin = [None if o is None else renumber[o] for o, k in zip(rows.origin, kept, strict=True) if k]
    unchanged = None
    if rows.unchanged is not None:
        unchanged = [u for u, k in zip(rows.unchanged, kept, strict=True) if k]
    return _Rows(change, origin, unchanged)


def _assemble(
    schema: TableSchema, typed: list[pa.Array | pa.ChunkedArray], text: pa.Table, rows: _Rows
) -> pa.Table:
    n = text.num_rows
    arrays: list[pa.Array | pa.ChunkedArray] = [
        *typed,
        text.column(OP_COLUMN),
        _row_numbers(n),
        text.column(POSITION_COLUMN),
        text.column(COMMIT_TIME_COLUMN),
        pa.nulls(n, pa.list_(pa.string()))
        if rows.unchanged is None
        else pa.array(rows.unchanged, pa.list_(pa.string())),
    ]
    fields = arrow_schema(schema)
    if rows.origin is not None and any(o is not None for o in rows.origin):
        # Only batches with key changes whose unsent values live under the old key carry the column.
        arrays.append(pa.array(rows.origin, pa.int64()))
        fields = fields.append(pa.field(FROM_SEQ_COLUMN, pa.int64()))
    return pa.Table.from_arrays(arrays, schema=fields)


def _columnar(schema: TableSchema, changes: ChunkedChanges) -> bool:
    """Rows and chunks can be staged column-wise (no unchanged columns to fill, every row full width)."""
    width = len(schema.columns)
    return not any(
        isinstance(p, Change)
        and (p.unchanged or p.prior is not None or len(p.values) != width or p.op is Op.TRUNCATE)
        for p in changes.parts
    )


def _text_schema(schema: TableSchema) -> pa.Schema:
    return pa.schema([pa.field(c.name, pa.string()) for c in schema.columns] + _META_TEXT)


def _rows_text(schema: TableSchema, run: Sequence[Change]) -> pa.Table:
    """Changes (all of the schema's width) as one text table."""
    if run:
        columns = [pa.array(list(v), pa.string()) for v in zip(*(c.values for c in run), strict=True)]
    else:
        columns = [pa.array([], pa.string()) for _ in schema.columns]
    columns.append(pa.array([c.op.value for c in run], pa.string()))
    columns.append(pa.array([c.position.value for c in run], pa.string()))
    columns.append(pa.array([c.commit_time for c in run], pa.timestamp("us", tz="UTC")))
    return pa.Table.from_arrays(columns, schema=_text_schema(schema))


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
            tables.append(_rows_text(schema, run))
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


def _parquet(table: pa.Table, sink: BinaryIO) -> None:
    """Write the staged file (zstd) to ``sink``, in row groups of about 8 MB: one group for a batch of large
    values makes the writer hold several copies of it at once (a 60 MB batch of 1 MB values cost ~230 MB
    more than 8 MB groups). Dictionary encoding only for text and byte columns of small values: for large
    ones the writer fills a dictionary with them before it gives up on it (1 MB values: ~3 times their size
    at once). Streamed to the store's file, never whole in memory (its bytes in memory added half a batch
    of incompressible values to staging's peak), through a native buffer of ``_SINK_BUFFER`` bytes: each
    write to a Python file takes the GIL, and while another thread runs Python (the source's read-ahead,
    the merge thread) every such take waits out a switch interval: a 100k-row batch took 0.7 s instead of
    0.06 s beside one busy thread."""
    n = table.num_rows
    per_group = max(1, n * _ROW_GROUP_BYTES // max(1, table.nbytes))
    small = [
        f.name
        for f, c in zip(table.schema, table.columns, strict=True)
        if _dictionary_kind(f.type) and c.nbytes <= _SMALL_VALUES * n
    ]
    out = pa.BufferedOutputStream(pa.PythonFile(sink, mode="w"), _SINK_BUFFER)
    pq.write_table(
        table, out, compression="zstd", compression_level=1, write_statistics=False,
        row_group_size=min(n or 1, per_group), use_dictionary=small,
    )  # fmt: skip
    out.detach()  # flushes the buffer into ``sink`` and leaves it open: the store fsyncs and closes it


def _column_entry(c: Column) -> tuple[str, ...]:
    """A column as the manifest lists it: name and type, and its ``default`` when it has one."""
    return (c.name, str(c.type)) if c.default is None else (c.name, str(c.type), c.default)


def _dictionary_kind(t: pa.DataType) -> bool:
    """Texts and bytes gain from a dictionary; numbers and times do not (zstd takes their repeats), and
    hashing them cost a third of writing a batch of unique keys."""
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                or pa.types.is_large_binary(t))  # fmt: skip


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
        # Per table, the columns with bad values in its last batch: checked by shape first in the next.
        self._suspect: dict[TableId, frozenset[str]] = {}

    def stage(self, batch: Batch, *, keep: Callable[[RejectedRow], bool] | None = None) -> Manifest:
        """Write ``batch`` durably. When this returns, the source may be told its positions are done.

        A row whose value does not parse as its type is quarantined; ``keep(row)`` (default: always True)
        says whether the batch goes on without it. When it says False, nothing is written and
        ``BatchRejected`` is raised (the row is in the quarantine either way). ``keep`` is a policy of the
        table and the reason (``type_mismatch``, ``null_key``...): it is asked for the first row of each
        reason in the batch, and its answer stands for the reason's other rows.
        """
        started = time.perf_counter()
        # Column policies first: a dropped, nulled or hashed value never reaches Arrow, Parquet or the store.
        batch = apply_policies(batch, self.policies.get(batch.table))
        table, rejected = batch_to_arrow(batch, suspect=self._suspect.get(batch.table, frozenset()))
        self._suspect[batch.table] = rejected.bad_columns
        if rejected:
            self._set_aside(batch, rejected, keep)
        ops = _counts(table.column(OP_COLUMN))
        times = pc.min_max(table.column(COMMIT_TIME_COLUMN)).as_py() if table.num_rows else {}
        rows = table.num_rows
        base = f"{table_prefix(batch.table)}{batch.first.value.encode().hex()}-{batch.id}"
        size = self.store.put_written(base + ".parquet", functools.partial(_parquet, table))
        del table
        crash_point("mid_stage")
        manifest = Manifest(
            table=batch.table,
            batch_id=batch.id,
            first=batch.first,
            last=batch.last,
            rows=rows,
            inserts=ops.get("I", 0),
            updates=ops.get("U", 0),
            deletes=ops.get("D", 0),
            bytes=size,
            data_key=base + ".parquet",
            columns=tuple(_column_entry(c) for c in batch.schema.columns),
            primary_key=batch.schema.primary_key,
            min_commit_time=times.get("min"),
            max_commit_time=times.get("max"),
            staged_at=datetime.now(UTC),
        )
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

    def _set_aside(
        self, batch: Batch, rejected: RejectedRows, keep: Callable[[RejectedRow], bool] | None
    ) -> None:
        """Quarantine the rejected rows, in batch order, up to and including the first one ``keep`` refuses
        (then ``BatchRejected``: nothing of the batch is written; the rows after it are read again later)."""
        stop: RejectedRow | None = None
        taken = len(rejected)
        if keep is not None:
            # Once per reason, in batch order (not once per row: 50k bad rows made 50k row objects).
            reasons = rejected.data.column("reason")
            for reason in pc.unique(reasons).to_pylist():
                first = pc.index(reasons, reason).as_py()
                if first < taken and not keep(rejected[first]):
                    stop, taken = rejected[first], first + 1
        source = f"{batch.table} batch {batch.first}..{batch.last}"
        self.quarantine.put_rows(table=str(batch.table), source=source, rows=rejected.data.slice(0, taken))
        if stop is not None:
            raise BatchRejected(stop)

    def pending(self, table: TableId) -> Iterator[Manifest]:
        """Staged batches of ``table`` still in the store, oldest first. A manifest listed but gone when it
        is read was removed by its merge meanwhile (``status`` and ``GET /tables`` count batches while the
        merge thread applies them): applied, so not pending; it raised ``KeyError`` into their request."""
        for info in self.store.list(table_prefix(table)):
            if info.key.endswith(".json"):
                try:
                    data = self.store.get(info.key)
                except KeyError:
                    continue
                yield decode_manifest(data)

    def staged_tables(self) -> set[TableId]:
        tables = set()
        for info in self.store.list(BATCHES):
            name = info.key[len(BATCHES) :].split("/", 1)[0]
            tables.add(TableId.parse(name))
        return tables

    def remove_orphans(self, tables: Iterable[TableId] | None = None) -> int:
        """Delete staged data files without a manifest: a crash between removing an applied batch's manifest
        and its data (or between writing a batch's data and its manifest, which staging the batch again
        rewrites anyway) leaves them, and nothing else would ever reclaim the space. Call only while
        nothing stages them (start-up, under the lease): ``tables``, only these tables' files (scale-out:
        other tasks stage theirs meanwhile). Returns how many were deleted."""
        prefixes = [BATCHES] if tables is None else [table_prefix(t) for t in tables]
        keys = [info.key for prefix in prefixes for info in self.store.list(prefix)]
        manifests = {k.removesuffix(".json") for k in keys if k.endswith(".json")}
        orphans = [k for k in keys if k.endswith(".parquet") and k.removesuffix(".parquet") not in manifests]
        for key in orphans:
            self.store.delete(key)
        if orphans:
            log.info("staged_orphans_removed", files=len(orphans))
        return len(orphans)

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
        columns=tuple(tuple(str(v) for v in c) for c in d["columns"]),
        primary_key=tuple(d["primary_key"]),
        min_commit_time=ts(d["min_commit_time"]),
        max_commit_time=ts(d["max_commit_time"]),
        staged_at=datetime.fromisoformat(d["staged_at"]),
    )
