"""Decode one DMS CSV file: a pure core (bytes in, ``Change``/``BadRow``/``SchemaChange`` out), no I/O state.

The layout follows the DMS S3 target settings (``CsvLayout`` holds them):

- ``CsvDelimiter`` (default ``,``) between fields, ``CsvRowDelimiter`` (default ``\\n``) between rows, UTF-8.
- ``Rfc4180`` (default true): a field holding the delimiter, ``"`` or a row break is enclosed in ``"`` with
  inner quotes doubled. With ``Rfc4180=false`` DMS writes no quotes at all: fields are split on the delimiter.
- Each row is ``[Op,][timestamp,]col1,...,colN``. ``Op`` (``I``/``U``/``D``) comes first in CDC files, and
  in full-load files only with IncludeOpForFullLoad; without it every row gets the caller's default op.
- With TimestampColumnName, DMS adds one STRING column ``yyyy-MM-dd HH:mm:ss.SSSSSS``. Without a header we
  read it right after ``Op``; with a header (AddColumnName) its place comes from the header. Its value (UTC)
  becomes ``Change.commit_time``.
- With AddColumnName the first row names the columns, and columns are matched *by name*: a file may order
  them differently, lack some (their values are NULL) or add new ones after DDL on the source (a
  ``SchemaChange`` naming them as ``text`` comes before the file's first change). A header (or Parquet
  file) naming a column the replicator reserves (``catalog.column_name_problem``: ``_op``, ``_seq``, ...
  in any case) or that no warehouse accepts (empty, NUL) is a bad file (``bad_column_name``), never staged.
- NULL rule (CsvNullValue, default ``NULL``): a field is SQL NULL when it is *unquoted* and equal to the
  marker. A quoted field is always text. With UseCsvNoSupValue, a field equal to CsvNoSupValue means the
  source did not send the column (e.g. an unchanged LOB): it is listed in ``Change.unchanged``.

Rows are numbered 1, 2, ... in file order (a header row is not numbered); every record gets a number,
unreadable ones included, so numbers are stable across re-reads and the caller can skip acknowledged rows.
A bad row says where it is: its number and its byte range in the file (in the decompressed bytes of a gzip
file), and its values by column when it still splits into the table's columns, for the quarantine (which
applies the table's column policies to them before anything is stored).
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import IO

from replicator.model import Change, Column, Op, Position, SchemaChange, TableId, TableSchema
from replicator.schema import column_names_problem

OPS = {"I": Op.INSERT, "U": Op.UPDATE, "D": Op.DELETE}
_NO_UNCHANGED: frozenset[str] = frozenset()
ROW_DIGITS = 10  # fixed width so positions sort by row number as text; DMS files are at most 1 GB
_CHUNK = 1 << 20
# An open quote joins rows until it closes; past this size the record is handed on (and fails to parse) so
# one stray quote cannot pull the rest of a 1 GB file into memory.
MAX_RECORD = 64 << 20


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """How the rows of one table's files look; built once per table from the DMS options."""

    table: TableId
    schema: TableSchema
    null_value: str = "NULL"
    header: bool = False  # AddColumnName: the first row names the columns
    timestamp_column: str | None = None
    delimiter: str = ","
    row_delimiter: str = "\n"
    rfc4180: bool = True
    no_sup_value: str | None = None  # UseCsvNoSupValue: this text marks a column the source did not send


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that cannot become a change, for the quarantine: ``data`` is its original bytes (kept only for
    tables without column policies); ``values`` its fields by column name when the row still splits into
    the table's columns (None when it does not: a wrong field count, a CSV syntax error)."""

    row: int
    reason: str  # stable label: column_count, unknown_op, invalid_utf8, csv_syntax, bad_timestamp
    detail: str
    data: bytes
    span: tuple[int, int] | None = None  # CSV: (offset, length) of the row's bytes in the file
    decompressed: bool = False  # ``span`` counts the decompressed bytes of a gzip file
    group: tuple[int, int] | None = None  # Parquet: (row group, index of the row in it)
    values: Mapping[str, str | None] | None = None


class BadFile(Exception):
    """The file as a whole cannot be read (e.g. its header does not match the table)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class _Shape:
    """Where things are in a row: field index of Op, of the timestamp, and of each schema column."""

    width: int
    op_at: int | None
    ts_at: int | None
    columns: list[int | None]  # per schema column: its field index, None when the file lacks it
    plain: bool  # fields after [Op,][ts,] are exactly the schema's columns, in order


def decode_csv(
    stream: IO[bytes],
    layout: CsvLayout,
    *,
    position_prefix: str,
    has_op: bool,
    default_op: Op = Op.INSERT,
    skip: int = 0,
    decompressed: bool = False,
) -> Iterator[Change | BadRow | SchemaChange]:
    """Yield the changes and bad rows of one file, in file order, after the first ``skip`` rows.

    ``position_prefix`` + the zero-padded row number is each change's ``Position.value``. Reads the stream
    record by record: memory stays bounded by the longest row, whatever the file size. Raises ``BadFile``.
    ``decompressed``: the stream is a gzip file's content (bad rows' byte ranges say so).
    """
    spot = [0, int(decompressed)]  # the byte offset of the record last read (``_records``); the flag
    records = _records(stream, layout, spot)
    schema = layout.schema
    if layout.header:
        first = next(records, None)
        if first is None:
            return
        shape, schema = _header_shape(first, layout, has_op=has_op)
        if schema is not layout.schema:
            yield SchemaChange(layout.table, schema, Position(f"{position_prefix}{0:0{ROW_DIGITS}d}"))
    else:
        ts = (1 if has_op else 0) if layout.timestamp_column else None
        start = int(has_op) + int(ts is not None)
        n = len(schema.columns)
        shape = _Shape(start + n, 0 if has_op else None, ts, list(range(start, start + n)), True)
    yield from _rows(records, layout, schema, shape, position_prefix, default_op, skip, spot)


def _rows(  # noqa: PLR0917 - one private call site
    records: Iterator[str],
    layout: CsvLayout,
    schema: TableSchema,
    shape: _Shape,
    prefix: str,
    default_op: Op,
    skip: int,
    spot: list[int],
) -> Iterator[Change | BadRow]:
    table = layout.table
    delim = layout.delimiter
    marker = layout.null_value
    nosup = layout.no_sup_value
    quoting = layout.rfc4180
    width, op_at, ts_at = shape.width, shape.op_at, shape.ts_at
    start = int(op_at is not None) + int(ts_at is not None)
    names = schema.column_names
    last_ts_text: str | None = None
    last_ts: datetime | None = None
    row = 0
    for record in records:
        row += 1
        if row <= skip:
            continue
        if not record.isascii() and not _utf8(record):
            values_of = _split_values(record, layout, schema, shape)
            yield _bad(row, "invalid_utf8", "row is not valid UTF-8", record, spot, values_of)
            continue
        quoted: list[bool] | None = None
        if quoting and '"' in record:
            try:
                fields, quoted = _parse_quoted(record, delim)
            except csv.Error as exc:
                yield _bad(row, "csv_syntax", f"CSV cannot be parsed: {exc}", record, spot)
                continue
        else:
            fields = record.split(delim)
        if len(fields) != width:
            detail = f"expected {width} fields ({len(schema.columns)} columns), found {len(fields)}"
            yield _bad(row, "column_count", detail, record, spot)
            continue
        op = default_op
        if op_at is not None:
            found = OPS.get(fields[op_at])
            if found is None:
                detail = f"Op {fields[op_at][:20]!r} is not I, U or D"
                values_of = _values_of(fields, quoted, schema, shape, marker)
                yield _bad(row, "unknown_op", detail, record, spot, values_of)
                continue
            op = found
        commit_time = None
        if ts_at is not None:
            ts_text = fields[ts_at]
            if ts_text != last_ts_text:
                # Rows of one transaction share their timestamp: parse each distinct one once.
                try:
                    last_ts = (
                        None if ts_text == marker else datetime.fromisoformat(ts_text).replace(tzinfo=UTC)
                    )
                except ValueError:
                    detail = f"timestamp {ts_text[:40]!r} does not parse"
                    values_of = _values_of(fields, quoted, schema, shape, marker)
                    yield _bad(row, "bad_timestamp", detail, record, spot, values_of)
                    continue
                last_ts_text = ts_text
            commit_time = last_ts
        if shape.plain:
            values: list[str | None] = fields[start:] if start else fields  # type: ignore[assignment]
            flags = quoted[start:] if quoted is not None else None
        else:
            values = [None if i is None else fields[i] for i in shape.columns]
            flags = [False if i is None else quoted[i] for i in shape.columns] if quoted is not None else None
        unchanged = _NO_UNCHANGED
        if nosup is not None and nosup in values:
            # Like the NULL marker, only the unquoted marker means "not sent"; quoted, it is text.
            gone = [v == nosup and not (flags and flags[i]) for i, v in enumerate(values)]
            unchanged = frozenset(n for n, g in zip(names, gone, strict=True) if g)
            values = [None if g else v for v, g in zip(values, gone, strict=True)]
        if marker in values:
            if flags is None:
                values = [None if v == marker else v for v in values]
            else:
                values = [None if v == marker and not q else v for v, q in zip(values, flags, strict=True)]
        yield Change(
            table, op, tuple(values), Position(f"{prefix}{row:0{ROW_DIGITS}d}"), commit_time, unchanged
        )


def _records(stream: IO[bytes], layout: CsvLayout, spot: list[int]) -> Iterator[str]:
    """Split the byte stream into records (row delimiter removed), keeping quoted row breaks inside.

    Undecodable bytes become lone surrogates (``surrogateescape``) so the row can be flagged and its
    original bytes recovered for the quarantine. Before each record is yielded, ``spot[0]`` is set to its
    byte offset in the stream (text is counted back to bytes: in an ASCII chunk a character is a byte, and
    surrogateescape round-trips the rest); its length is that of its bytes.
    """
    delim = layout.row_delimiter
    step = len(delim.encode())
    quoting = layout.rfc4180
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    pending: str | None = None  # an unfinished record: an open quote spans the row delimiter
    tail = ""
    at = 0  # byte offset of the next piece
    start = 0  # byte offset of the record being read
    while True:
        chunk = stream.read(_CHUNK)
        eof = not chunk
        text = tail + decoder.decode(chunk, final=eof)
        ascii = text.isascii()  # O(1) in CPython: then a piece's length is its byte count
        parts = text.split(delim)
        tail = parts.pop()  # after the last delimiter: the start of the next chunk's first record
        if eof and tail:
            parts.append(tail)  # a last row without a row delimiter
        for piece in parts:
            if pending is None:
                part, start = piece, at
            else:
                part, pending = pending + delim + piece, None
            at += step + (len(piece) if ascii else len(piece.encode(errors="surrogateescape")))
            if quoting and part.count('"') % 2 and len(part) < MAX_RECORD:
                pending = part
                continue
            spot[0] = start
            yield part
        if eof:
            break
    if pending is not None:
        spot[0] = start
        yield pending  # an unterminated quote: the parser reports it as a syntax error


def _utf8(record: str) -> bool:
    try:
        record.encode()
    except UnicodeEncodeError:
        return False
    return True


class _Dialect(csv.Dialect):
    delimiter = ","
    quotechar = '"'
    doublequote = True
    skipinitialspace = False
    lineterminator = "\n"
    quoting = csv.QUOTE_MINIMAL
    strict = True  # a stray quote is an error to quarantine, not text to guess at


def _parse_quoted(record: str, delim: str) -> tuple[list[str], list[bool]]:
    """Fields of one RFC 4180 record and, for each, whether it was quoted. Raises ``csv.Error``."""
    if len(delim) == 1:
        rows = list(csv.reader([record], _Dialect, delimiter=delim))
        if len(rows) != 1:
            raise csv.Error("record spans more than one row")
        return rows[0], _quoted_flags(record, delim)
    fields: list[str] = []
    flags: list[bool] = []
    i, n = 0, len(record)
    while True:
        if i < n and record[i] == '"':
            j, buf = i + 1, []
            while True:
                k = record.find('"', j)
                if k < 0:
                    raise csv.Error("unexpected end of data")
                buf.append(record[j:k])
                if record.startswith('"', k + 1):
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            fields.append("".join(buf))
            flags.append(True)
            if i < n and not record.startswith(delim, i):
                raise csv.Error(f"'{delim}' expected after '\"'")
        else:
            k = record.find(delim, i)
            k = n if k < 0 else k
            text = record[i:k]
            if '"' in text:
                raise csv.Error("'\"' inside an unquoted field")
            fields.append(text)
            flags.append(False)
            i = k
        if i >= n:
            return fields, flags
        i += len(delim)


def _quoted_flags(record: str, delim: str) -> list[bool]:
    """For each field of one raw RFC 4180 record (already known to parse), whether it was quoted."""
    flags: list[bool] = []
    i, n = 0, len(record)
    while True:
        if i < n and record[i] == '"':
            flags.append(True)
            i += 1
            while i < n:
                if record[i] == '"':
                    if i + 1 < n and record[i + 1] == '"':
                        i += 2
                        continue
                    break
                i += 1
            i += 1  # closing quote
        else:
            flags.append(False)
            while i < n and record[i] != delim:
                i += 1
        if i >= n:
            return flags
        i += 1  # the delimiter


def _bad(  # noqa: PLR0917 - private, bad rows only
    row: int, reason: str, detail: str, record: str, spot: list[int],
    values: Mapping[str, str | None] | None = None,
) -> BadRow:  # fmt: skip
    data = record.encode("utf-8", "surrogateescape")
    return BadRow(row, reason, detail, data, (spot[0], len(data)), bool(spot[1]), None, values)


def _values_of(
    fields: list[str], quoted: list[bool] | None, schema: TableSchema, shape: _Shape, marker: str
) -> dict[str, str | None]:
    """A split bad row's values by column (the NULL marker unquoted is None), for the quarantine."""
    out: dict[str, str | None] = {}
    for name, i in zip(schema.column_names, shape.columns, strict=True):
        if i is None or (fields[i] == marker and not (quoted and quoted[i])):
            out[name] = None
        else:
            out[name] = fields[i]
    return out


def _split_values(
    record: str, layout: CsvLayout, schema: TableSchema, shape: _Shape
) -> dict[str, str | None] | None:
    """The values of a row that is not valid UTF-8, when it still splits into the table's columns
    (undecodable bytes stay lone surrogates: the quarantine writes them escaped)."""
    try:
        if layout.rfc4180 and '"' in record:
            fields, quoted = _parse_quoted(record, layout.delimiter)
        else:
            fields, quoted = record.split(layout.delimiter), None
    except csv.Error:
        return None
    if len(fields) != shape.width:
        return None
    return _values_of(fields, quoted, schema, shape, layout.null_value)


def _header_shape(record: str, layout: CsvLayout, *, has_op: bool) -> tuple[_Shape, TableSchema]:
    """Read the header row: where Op, the timestamp and each column are; new columns widen the schema."""
    try:
        header = (
            _parse_quoted(record, layout.delimiter)[0] if '"' in record else record.split(layout.delimiter)
        )
    except csv.Error as exc:
        raise BadFile("bad_header", f"header row cannot be parsed: {exc}") from None
    if not record.isascii() and not _utf8(record):
        raise BadFile("bad_header", "header row is not valid UTF-8")
    names = [h.lower() for h in header]
    if len(set(names)) != len(names):
        raise BadFile("bad_header", f"header {header[:8]} names a column twice")
    op_at: int | None = None
    if has_op:
        if not names or names[0] != "op":
            raise BadFile("bad_header", f"header {header[:3]} does not start with Op")
        op_at = 0
    ts_at: int | None = None
    if layout.timestamp_column:
        try:
            ts_at = names.index(layout.timestamp_column.lower())
        except ValueError:
            raise BadFile(
                "bad_header", f"header has no timestamp column {layout.timestamp_column!r}"
            ) from None
    schema = layout.schema
    where = {n: i for i, n in enumerate(names) if i not in (op_at, ts_at)}
    known = {c.lower() for c in schema.column_names}
    missing_keys = [k for k in schema.primary_key if k.lower() not in where]
    if missing_keys:
        raise BadFile("bad_header", f"header {header[:8]} lacks primary key column(s) {missing_keys}")
    # Checked before anything of the file is staged: a reserved name would be taken for the replicator's
    # own column, and an unusable one (NUL) would be staged, acknowledged, and then fail every merge.
    problem = column_names_problem(header[i] for i in sorted(where.values()))
    if problem is not None:
        raise BadFile("bad_column_name", f"header {header[:8]}: {problem}")
    added = [header[i] for i in sorted(where.values()) if names[i] not in known]
    if added:
        columns = schema.columns + tuple(Column.of(n, "text") for n in added)
        try:
            schema = replace(schema, columns=columns)
        except ValueError as exc:  # another rule of TableSchema: this file's problem, not a crash per round
            raise BadFile("bad_column_name", f"header {header[:8]}: {exc}") from None
    indices = [where.get(c.lower()) for c in schema.column_names]
    start = int(op_at is not None) + int(ts_at is not None)
    plain = indices == list(range(start, start + len(indices))) and (ts_at is None or ts_at == start - 1)
    return _Shape(len(header), op_at, ts_at, indices, plain), schema
