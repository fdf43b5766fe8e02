"""Decode one DMS CSV file: a pure core (bytes in, ``Change``/``BadRow`` out), no listing, no state.

The file layout follows the DMS S3 target defaults: ``,`` between fields, ``\\n`` between rows, RFC 4180
quoting (a field holding ``,``, ``"`` or a newline is enclosed in ``"`` with inner quotes doubled), UTF-8.
Each row is ``[Op,][timestamp,]col1,...,colN``:

- ``Op`` (``I``/``U``/``D``) comes first in CDC files, and in full-load files only with IncludeOpForFullLoad
  (without it every full-load row is an insert).
- With TimestampColumnName, DMS adds one STRING column ``yyyy-MM-dd HH:mm:ss.SSSSSS``. DMS documents its
  existence but not its place; we read it right after ``Op`` (before the table's columns), and when a header
  row is present (AddColumnName) we take its place from the header instead. Its value (UTC) becomes
  ``Change.commit_time``. In full-load files it is the transfer time, not a commit time.

NULL rule (DMS CsvNullValue, default ``NULL``): a field is SQL NULL when it is *unquoted* and equal to the
null marker. A quoted field is always text, so ``"NULL"`` is the four letters and ``""`` is the empty string;
an unquoted empty field is the empty string unless the marker is the empty string. The csv module does not
say which fields were quoted, so rows holding a marker-valued field are checked against their raw text
(rarely needed: only when the quoted marker itself appears in the row).

Rows are numbered 1, 2, ... in file order (a header row is not numbered); every record the CSV reader
returns gets a number, unreadable ones included, so numbers are stable across re-reads and the caller can
skip the rows it has already acknowledged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from replicator.model import Change, Op, Position, TableId, TableSchema

_OPS = {"I": Op.INSERT, "U": Op.UPDATE, "D": Op.DELETE}
_NO_UNCHANGED: frozenset[str] = frozenset()
ROW_DIGITS = 10  # fixed width so positions sort by row number as text; DMS files are at most 1 GB


class _Dialect(csv.Dialect):
    delimiter = ","
    quotechar = '"'
    doublequote = True
    skipinitialspace = False
    lineterminator = "\n"
    quoting = csv.QUOTE_MINIMAL
    strict = True  # a stray quote is an error to quarantine, not text to guess at


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """How the rows of one table's files look; built once per table from the DMS options."""

    table: TableId
    schema: TableSchema
    null_value: str = "NULL"
    header: bool = False  # AddColumnName: the first row names the columns
    timestamp_column: str | None = None


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that cannot become a change. ``data`` is its original bytes, for the quarantine."""

    row: int
    reason: str  # stable label: column_count, unknown_op, invalid_utf8, csv_syntax, bad_timestamp
    detail: str
    data: bytes


class BadFile(Exception):
    """The file as a whole cannot be read (e.g. its header does not match the table)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def decode_csv(
    stream: IO[bytes], layout: CsvLayout, *, position_prefix: str, has_op: bool, skip: int = 0
) -> Iterator[Change | BadRow]:
    """Yield the changes and bad rows of one file, in file order, after the first ``skip`` rows.

    ``position_prefix`` + the zero-padded row number is each change's ``Position.value``. Reads the stream
    line by line: memory stays bounded by the longest row, whatever the file size. Raises ``BadFile``.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    raw: list[str] = []  # physical lines of the record being parsed, for quarantine and the NULL rule
    bad_utf8 = [False]
    reader = csv.reader(_tap(text, raw, bad_utf8), _Dialect)
    schema = layout.schema
    ncols = len(schema.columns)
    op_at = 0 if has_op else None
    ts_at: int | None = None
    if layout.timestamp_column:
        ts_at = 1 if has_op else 0
    start = int(has_op) + int(ts_at is not None)
    width = start + ncols
    if layout.header:
        ts_at = _check_header(reader, layout, has_op=has_op)
        raw.clear()
    table = layout.table
    marker = layout.null_value
    quoted_marker = f'"{marker}"'
    insert = Op.INSERT
    last_ts_text: str | None = None
    last_ts: datetime | None = None
    row = 0
    while True:
        try:
            for fields in reader:
                row += 1
                if row <= skip:
                    raw.clear()
                    bad_utf8[0] = False
                    continue
                if bad_utf8[0]:
                    yield _bad(row, "invalid_utf8", "row is not valid UTF-8", raw)
                    bad_utf8[0] = False
                    continue
                if len(fields) != width:
                    detail = f"expected {width} fields ({ncols} columns), found {len(fields)}"
                    yield _bad(row, "column_count", detail, raw)
                    continue
                op = insert
                if op_at is not None:
                    found = _OPS.get(fields[0])
                    if found is None:
                        yield _bad(row, "unknown_op", f"Op {fields[0][:20]!r} is not I, U or D", raw)
                        continue
                    op = found
                commit_time = None
                if ts_at is not None:
                    ts_text = fields[ts_at]
                    if ts_text != last_ts_text:
                        # Rows of one transaction share their timestamp: parse each distinct one once.
                        try:
                            last_ts = _parse_ts(ts_text, marker)
                        except ValueError:
                            yield _bad(
                                row, "bad_timestamp", f"timestamp {ts_text[:40]!r} does not parse", raw
                            )
                            continue
                        last_ts_text = ts_text
                    commit_time = last_ts
                values: list[str | None] = fields[start:] if start else fields  # type: ignore[assignment]
                if marker in values:
                    values = _nulls(values, marker, quoted_marker, raw, start)
                raw.clear()
                yield Change(
                    table, op, tuple(values), Position(f"{position_prefix}{row:0{ROW_DIGITS}d}"),
                    commit_time, _NO_UNCHANGED,
                )  # fmt: skip
            return
        except csv.Error as exc:
            # The reader starts afresh with the next line after an error, so the rest of the file goes on.
            row += 1
            if row > skip:
                reason = "invalid_utf8" if bad_utf8[0] else "csv_syntax"
                yield _bad(row, reason, f"CSV cannot be parsed: {exc}", raw)
            raw.clear()
            bad_utf8[0] = False


def _tap(lines: Iterable[str], raw: list[str], bad_utf8: list[bool]) -> Iterator[str]:
    """Pass lines to the CSV reader, keeping each record's raw lines and flagging undecodable bytes.

    Undecodable bytes arrive as lone surrogates (``surrogateescape``), which UTF-8 cannot encode: the
    ``isascii`` test keeps that check off the common path.
    """
    for line in lines:
        raw.append(line)
        if not line.isascii():
            try:
                line.encode()
            except UnicodeEncodeError:
                bad_utf8[0] = True
        yield line


def _bad(row: int, reason: str, detail: str, raw: list[str]) -> BadRow:
    data = "".join(raw).encode("utf-8", "surrogateescape")
    raw.clear()
    return BadRow(row, reason, detail, data)


def _parse_ts(text: str, marker: str) -> datetime | None:
    if text == marker:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _nulls(
    values: list[str | None], marker: str, quoted_marker: str, raw: list[str], start: int
) -> list[str | None]:
    """Turn unquoted marker fields into None (see the module docstring for the rule)."""
    record = "".join(raw)
    if quoted_marker not in record:
        return [None if v == marker else v for v in values]
    quoted = _quoted_flags(record)[start:]
    return [None if v == marker and not q else v for v, q in zip(values, quoted, strict=False)]


def _quoted_flags(record: str) -> list[bool]:
    """For each field of one raw RFC 4180 record (already known to parse), whether it was quoted."""
    flags: list[bool] = []
    i, n = 0, len(record.rstrip("\r\n"))
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
            while i < n and record[i] != ",":
                i += 1
        if i >= n:
            return flags
        i += 1  # the delimiter


def _check_header(reader: Iterator[list[str]], layout: CsvLayout, *, has_op: bool) -> int | None:
    """Read the header row, check it names the table's columns; return where the timestamp column is."""
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise BadFile("bad_header", f"header row cannot be parsed: {exc}") from None
    if header is None:
        return None
    names = [h.lower() for h in header]
    expected = [c.lower() for c in layout.schema.column_names]
    ts_at: int | None = None
    if has_op and (not names or names[0] != "op"):
        raise BadFile("bad_header", f"header {header[:3]} does not start with Op")
    if layout.timestamp_column:
        try:
            ts_at = names.index(layout.timestamp_column.lower())
        except ValueError:
            raise BadFile(
                "bad_header", f"header has no timestamp column {layout.timestamp_column!r}"
            ) from None
    data = [n for i, n in enumerate(names) if i != ts_at and not (has_op and i == 0)]
    if data != expected:
        raise BadFile("bad_header", f"header columns {data} do not match the table's {expected}")
    start = int(has_op) + int(ts_at is not None)
    if ts_at is not None and ts_at != start - 1:
        # Column positions other than [Op,][ts,]columns... are the later DDL issue's job.
        raise BadFile("bad_header", f"timestamp column at field {ts_at}, expected {start - 1}")
    return ts_at
