"""Decode one DMS Parquet file (``DataFormat=parquet``, ParquetVersion 1.0 or 2.0): typed columns -> changes.

DMS writes the same fields as in CSV (``Op`` first in CDC files, the optional TimestampColumnName column,
then the table's columns), but named and typed. Columns are matched by name (case-insensitively), so the
file's own schema is the truth: columns the catalog does not know yet (DDL on the source) become a
``SchemaChange`` with their Parquet types before the file's first change. Values are turned into the wire
text the rest of the pipeline speaks, a whole column at a time. The file is read one row group batch at a
time, so memory stays bounded whatever the file size. Rows are numbered 1, 2, ... in file order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from replicator.model import (
    COMMIT_TIME_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    Change,
    ChangeChunk,
    Column,
    Op,
    Position,
    SchemaChange,
    TableId,
    TableSchema,
)
from replicator.schema import column_names_problem
from replicator.sources.dms.arrow import positions
from replicator.sources.dms.csvfiles import OPS, ROW_DIGITS, BadFile, BadRow
from replicator.values import parse_type

_NO_UNCHANGED: frozenset[str] = frozenset()
BATCH_ROWS = 65_536


def logical_type(t: pa.DataType) -> str:
    """The schema type name for a Parquet/Arrow column type (for columns that appear in later files)."""
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "smallint"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "integer"
    if pa.types.is_integer(t):
        return "bigint"
    if pa.types.is_float32(t):
        return "real"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_time(t):
        return "time"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bytea"
    return "text"


def to_text(array: pa.Array) -> list[Any]:
    """A column as wire text (None for NULL), as DMS would have written it to CSV."""
    t = array.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return [None if v is None else "\\x" + v.hex() for v in array.to_pylist()]
    values: list[Any] = text_array(array).to_pylist()
    return values


def text_array(array: pa.Array) -> pa.Array:
    """``to_text`` of a non-binary column, kept in Arrow (a string array) for the columnar path."""
    t = array.type
    if pa.types.is_timestamp(t) and t.tz:
        text = pc.cast(pc.cast(array, pa.timestamp(t.unit, tz="UTC")), pa.string())
        return pc.replace_substring_regex(text, pattern="Z$", replacement="+00:00")
    return pc.cast(array, pa.string())


def decode_parquet(
    path: Path | BinaryIO,
    table: TableId,
    schema: TableSchema,
    *,
    position_prefix: str,
    has_op: bool,
    default_op: Op = Op.INSERT,
    timestamp_column: str | None = None,
    skip: int = 0,
) -> Iterator[Change | BadRow | SchemaChange | ChangeChunk]:
    """Yield the changes (and rows with a bad Op) of one Parquet file after its first ``skip`` rows; a bad
    row says where it is by row group and index in it (a row of a Parquet file has no byte range)."""
    try:
        pf = pq.ParquetFile(path)
        fields = list(pf.schema_arrow)
    except (pa.ArrowException, OSError) as exc:
        raise BadFile("bad_parquet", f"not a readable Parquet file: {exc}") from None
    by_name = {f.name.lower(): i for i, f in enumerate(fields)}
    op_at = by_name.get("op") if has_op else None
    if has_op and op_at is None:
        raise BadFile("bad_parquet", f"no Op column among {[f.name for f in fields][:8]}")
    ts_at = by_name.get(timestamp_column.lower()) if timestamp_column else None
    # Before anything of the file is staged (see dms_csv): reserved, unusable or case-duplicate names.
    problem = column_names_problem(f.name for i, f in enumerate(fields) if i not in (op_at, ts_at))
    if problem is not None:
        raise BadFile("bad_column_name", f"Parquet columns {[f.name for f in fields][:8]}: {problem}")
    known = {c.lower() for c in schema.column_names}
    missing = [k for k in schema.primary_key if k.lower() not in by_name]
    if missing:
        raise BadFile("bad_parquet", f"primary key column(s) {missing} missing from the file")
    added = [f for i, f in enumerate(fields) if i not in (op_at, ts_at) and f.name.lower() not in known]
    if added:
        cols = tuple(Column(f.name, parse_type(logical_type(f.type))) for f in added)
        try:
            schema = replace(schema, columns=schema.columns + cols)
        except ValueError as exc:  # another rule of TableSchema: this file's problem, not a crash per round
            raise BadFile("bad_column_name", f"Parquet columns: {exc}") from None
        yield SchemaChange(table, schema, Position(f"{position_prefix}{0:0{ROW_DIGITS}d}"))
    wanted = [by_name.get(c.lower()) for c in schema.column_names]
    names = schema.column_names
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            n = batch.num_rows
            if row + n <= skip:
                row += n
                continue
            chunk = _chunk(batch, table, schema, position_prefix, row, skip, op_at, ts_at, wanted, default_op)
            if chunk is not None:
                row += n
                yield chunk
                continue
            values = [to_text(batch.column(i)) if i is not None else [None] * n for i in wanted]
            ops = batch.column(op_at).to_pylist() if op_at is not None else None
            times = _times(batch.column(ts_at)) if ts_at is not None else None
            for j, vals in enumerate(zip(*values, strict=True)):
                row += 1
                if row <= skip:
                    continue
                op = default_op
                if ops is not None:
                    found = OPS.get(ops[j])
                    if found is None:
                        by_column = dict(zip(names, vals, strict=True))
                        data = json.dumps({"Op": ops[j], **by_column}).encode()
                        detail = f"Op {str(ops[j])[:20]!r} is not I, U or D"
                        group = _row_group_of(pf.metadata, row)
                        yield BadRow(row, "unknown_op", detail, data, group=group, values=by_column)
                        continue
                    op = found
                yield Change(
                    table, op, vals, Position(f"{position_prefix}{row:0{ROW_DIGITS}d}"),
                    times[j] if times is not None else None, _NO_UNCHANGED,
                )  # fmt: skip
    except (pa.ArrowException, OSError) as exc:
        raise BadFile("bad_parquet", f"Parquet data cannot be read after row {row}: {exc}") from None


def _chunk(  # noqa: PLR0917 - one private call site
    batch: pa.RecordBatch, table: TableId, schema: TableSchema, prefix: str, row: int, skip: int,
    op_at: int | None, ts_at: int | None, wanted: list[int | None], default_op: Op,
) -> ChangeChunk | None:  # fmt: skip
    """The batch's rows after ``skip`` as one chunk, or None when the row path must take it (an Op that
    is not I/U/D, binary values, a text timestamp column: per-row cases the chunk does not mirror)."""
    cut = max(0, skip - row)
    part = batch.slice(cut)
    n = part.num_rows
    if n == 0:
        return None
    used = [part.column(i) for i in wanted if i is not None]
    if any(pa.types.is_binary(c.type) or pa.types.is_large_binary(c.type)
           or pa.types.is_fixed_size_binary(c.type) for c in used):  # fmt: skip
        return None
    if op_at is not None:
        ops = part.column(op_at)
        if not (pa.types.is_string(ops.type) or pa.types.is_large_string(ops.type)):
            return None
        ops = ops.cast(pa.string())
        if ops.null_count or not pc.all(pc.is_in(ops, value_set=pa.array(["I", "U", "D"]))).as_py():
            return None
    else:
        ops = pa.repeat(pa.scalar(default_op.value, pa.string()), n)
    if ts_at is None:
        times = pa.nulls(n, pa.timestamp("us", tz="UTC"))
    elif pa.types.is_timestamp(part.column(ts_at).type):
        t = part.column(ts_at).type
        times = (
            part.column(ts_at).cast(pa.timestamp(t.unit, tz=t.tz or "UTC")).cast(pa.timestamp("us", tz="UTC"))
        )
    else:
        return None
    values = [text_array(part.column(i)) if i is not None else pa.nulls(n, pa.string()) for i in wanted]
    data = pa.Table.from_arrays(
        [*values, ops, positions(prefix, row + cut + 1, n), times],
        names=[*schema.column_names, OP_COLUMN, POSITION_COLUMN, COMMIT_TIME_COLUMN],
    )
    return ChangeChunk(table, schema, data)


def _row_group_of(meta: pq.FileMetaData, row: int) -> tuple[int, int]:
    """Row ``row`` (1, 2, ... in the file) as (row group, index of the row in it), both from 0."""
    left = row - 1
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if left < n:
            return g, left
        left -= n
    return meta.num_row_groups, left  # past the last group: not a row of this file (never for a real row)


def _times(array: pa.Array) -> list[datetime | None]:
    """The timestamp column: DMS writes it as text (``yyyy-MM-dd HH:mm:ss.SSSSSS``) or as a timestamp."""
    if pa.types.is_timestamp(array.type):
        return [None if v is None else v.replace(tzinfo=UTC) for v in array.to_pylist()]
    out: list[datetime | None] = []
    for v in array.to_pylist():
        try:
            out.append(datetime.fromisoformat(v).replace(tzinfo=UTC) if v else None)
        except ValueError:
            out.append(None)  # an unreadable commit time only costs the lag metric this row
    return out
