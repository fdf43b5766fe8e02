"""An independent reference reader for a folder of AWS DMS S3 files: the expected final state per table.

Written from DMS's documented layout alone, with the csv module, a small RFC 4180 tokenizer of its own and
pyarrow's Parquet reader (it shares no code with the replicator). For every table folder
``<schema>/<table>/``: apply the LOAD files in counter order (every row is an insert), then the CDC files in
name order (first field Op: I/U upsert the image, D deletes the key). Files whose name starts with ``.``
(in-progress writes) are ignored.

``final_state`` reads the demo's format (CSV, no header, timestamp column). ``read_feed`` reads any layout of
``FeedLayout`` (header, timestamp column or not, null marker, delimiter, gzip, Parquet, PreserveTransactions
``CDC_TXN`` files) and types every value with the caller's parsers, so it also says which rows are bad input
and why (``Bad``): the rows the replicator must quarantine, never apply.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

Key = tuple[str, ...]
Row = list[str | None]


def table_files(table_dir: Path) -> list[Path]:
    """LOAD files first (hex counter, fixed width, so name order), then CDC files in name (= time) order."""
    names = sorted(p.name for p in table_dir.glob("*.csv") if not p.name.startswith("."))
    loads = [n for n in names if n.startswith("LOAD")]
    return [table_dir / n for n in loads + [n for n in names if n not in loads]]


def records(
    table_dir: Path, *, timestamp: bool = True, header: bool = False
) -> Iterator[tuple[Path, str, str | None, Row]]:
    """(file, op, commit timestamp, values) for every row of one table, in apply order. NULL -> None."""
    for path in table_files(table_dir):
        is_cdc = not path.name.startswith("LOAD")
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        for fields in rows[1:] if header else rows:
            op = fields.pop(0) if is_cdc else "I"
            ts = fields.pop(0) if timestamp else None
            yield path, op, ts, [None if v == "NULL" else v for v in fields]


def final_state(
    folder: Path,
    key_positions: Mapping[str, Sequence[int]],
    *,
    schema: str = "dbo",
    timestamp: bool = True,
    header: bool = False,
) -> dict[str, dict[Key, Row]]:
    """table -> {primary key values -> row values} after applying every file of every table in order.

    ``key_positions`` gives, per table, the positions of its primary-key columns among its data columns.
    """
    state: dict[str, dict[Key, Row]] = {}
    for table, positions in key_positions.items():
        rows = state.setdefault(table, {})
        for path, op, _ts, values in records(folder / schema / table, timestamp=timestamp, header=header):
            key = tuple(str(values[i]) for i in positions)
            if op in ("I", "U"):
                rows[key] = values
            elif op == "D":
                rows.pop(key, None)
            else:
                raise ValueError(f"{path}: unknown Op {op!r}")
    return state


# -- any layout, with bad rows -------------------------------------------------------------------------------

Parser = Callable[[str], Any]  # text -> typed value; raises ValueError when the text is not of the type


@dataclass(frozen=True, slots=True)
class FeedLayout:
    """The DMS endpoint settings a feed was written with (only those the reader needs)."""

    header: bool = False  # AddColumnName
    timestamp: str | None = None  # TimestampColumnName
    null: str = "NULL"  # CsvNullValue: an *unquoted* field equal to it is NULL
    delimiter: str = ","  # one character
    op_for_full_load: bool = False  # IncludeOpForFullLoad
    parquet: bool = False
    txn_path: str | None = None  # PreserveTransactions: the CdcPath folder of the CDC_TXN files


@dataclass(frozen=True, slots=True)
class Record:
    table: str
    file: str  # name below the table folder (or the CDC_TXN file name)
    row: int  # 1, 2, ... in file order, a header not counted
    op: str
    values: tuple[Any, ...]  # typed by the parsers; None is NULL


@dataclass(frozen=True, slots=True)
class Bad:
    table: str
    file: str
    row: int
    reason: str  # column_count, unknown_op, bad_timestamp, invalid_utf8, type, null_key


@dataclass(frozen=True, slots=True)
class TableColumns:
    columns: tuple[tuple[str, Parser], ...]  # (name, parser) in schema order
    key: tuple[int, ...]  # positions of the primary key columns


def read_feed(
    folder: Path, tables: Mapping[str, TableColumns], layout: FeedLayout, *, schema: str = "dbo"
) -> tuple[list[Record], list[Bad]]:
    """Every good change of every table in apply order (per table), and every bad row."""
    good: list[Record] = []
    bad: list[Bad] = []
    for table, spec in tables.items():
        folder_of = folder / schema / table
        listed = folder_of.iterdir() if folder_of.is_dir() else iter(())
        names = sorted(p.name for p in listed if p.is_file() and not p.name.startswith("."))
        names = [n for n in names if n.startswith("LOAD")] + [n for n in names if not n.startswith("LOAD")]
        for name in names:
            has_op = not name.startswith("LOAD") or layout.op_for_full_load
            rows = _parquet_rows(folder_of / name, spec, layout, has_op) if layout.parquet else None
            if rows is None:
                rows = _csv_rows(folder_of / name, spec, layout, has_op)
            for row, fields in rows:
                _take(table, name, row, fields, spec, layout, has_op, good, bad)
    if layout.txn_path is not None:
        txn = folder / layout.txn_path
        for path in sorted(txn.glob("CDC_TXN*")) if txn.is_dir() else []:
            for row, fields in _csv_rows(path, None, layout, True):
                if isinstance(fields, str):
                    bad.append(Bad("", path.name, row, fields))  # unreadable: its table is unknown
                    continue
                if len(fields) < 3:
                    bad.append(Bad("", path.name, row, "column_count"))
                    continue
                (name, _), (schema_name, _) = fields[1], fields[2]
                if schema_name != schema or name not in tables:
                    continue
                own = [fields[0], *fields[3:]]  # Op, [ts,] values: the table and schema fields dropped
                _take(name, path.name, row, own, tables[name], layout, True, good, bad)
    return good, bad


def apply(
    records: Sequence[Record], tables: Mapping[str, TableColumns]
) -> dict[str, dict[Key, tuple[Any, ...]]]:
    """table -> {key -> row} after the good changes, in order: I/U upsert the image, D deletes the key."""
    state: dict[str, dict[Key, tuple[Any, ...]]] = {t: {} for t in tables}
    for r in records:
        key = tuple(repr(r.values[i]) for i in tables[r.table].key)
        if r.op == "D":
            state[r.table].pop(key, None)
        else:
            state[r.table][key] = r.values
    return state


Field = tuple[Any, bool]  # (text, was quoted); from Parquet: (typed value or None, True)


def _take(
    table: str,
    name: str,
    row: int,
    fields: list[Field] | str,
    spec: TableColumns,
    layout: FeedLayout,
    has_op: bool,
    good: list[Record],
    bad: list[Bad],
) -> None:
    """Classify one row as a good change (typed) or bad input. ``fields``: [Op,] [ts,] values, or a reason."""
    if isinstance(fields, str):
        bad.append(Bad(table, name, row, fields))
        return
    op = fields[0][0] if has_op else "I"
    rest = fields[1:] if has_op else fields
    if layout.timestamp is not None:
        if len(rest) != len(spec.columns) + 1:
            bad.append(Bad(table, name, row, "column_count"))
            return
        stamp, rest = rest[0], rest[1:]
    elif len(rest) != len(spec.columns):
        bad.append(Bad(table, name, row, "column_count"))
        return
    if op not in ("I", "U", "D"):
        bad.append(Bad(table, name, row, "unknown_op"))
        return
    if (
        layout.timestamp is not None
        and stamp[0] is not None
        and not (stamp[0] == layout.null and not stamp[1])
    ):
        try:
            _timestamp(stamp[0])
        except ValueError:
            bad.append(Bad(table, name, row, "bad_timestamp"))
            return
    values: list[Any] = []
    for (text, quoted), (_, parse) in zip(rest, spec.columns, strict=True):
        if text is None or (text == layout.null and not quoted):
            values.append(None)
            continue
        if not isinstance(text, str):
            values.append(text)  # a typed Parquet value
            continue
        try:
            values.append(parse(text))
        except ValueError:
            bad.append(Bad(table, name, row, "type"))
            return
    if any(values[i] is None for i in spec.key):
        bad.append(Bad(table, name, row, "null_key"))
        return
    good.append(Record(table, name, row, op, tuple(values)))


def _timestamp(text: str) -> None:
    """DMS's ``yyyy-MM-dd HH:mm:ss.SSSSSS``."""
    from datetime import datetime

    datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f")


def _csv_rows(
    path: Path, spec: TableColumns | None, layout: FeedLayout, has_op: bool
) -> Iterator[tuple[int, list[Field] | str]]:
    """(row number, fields or the reason the row is bad) per record of a CSV file (gzip by magic bytes)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8", errors="surrogateescape")
    records = _tokenize(text, layout.delimiter)
    if layout.header and records:
        records = records[1:]
    for i, (fields, raw) in enumerate(records, start=1):
        if any("\udc80" <= ch <= "\udcff" for ch in raw):
            yield i, "invalid_utf8"
        else:
            yield i, fields


def _tokenize(text: str, delim: str) -> list[tuple[list[Field], str]]:
    """RFC 4180 records of ``text`` (rows end with \\n or \\r\\n), each as its fields and its raw text."""
    records: list[tuple[list[Field], str]] = []
    i, n = 0, len(text)
    while i < n:
        start = i
        fields: list[Field] = []
        while True:
            if i < n and text[i] == '"':
                i += 1
                buf = []
                while i < n:
                    if text[i] == '"':
                        if i + 1 < n and text[i + 1] == '"':
                            buf.append('"')
                            i += 2
                            continue
                        i += 1
                        break
                    buf.append(text[i])
                    i += 1
                value, quoted = "".join(buf), True
                end = i
                while i < n and text[i] not in (delim, "\n", "\r"):
                    i += 1  # text after a closing quote is kept (lenient, like most readers)
                value += text[end:i]
            else:
                end = i
                while i < n and text[i] not in (delim, "\n", "\r"):
                    i += 1
                value, quoted = text[end:i], False
            fields.append((value, quoted))
            if i < n and text[i] == delim:
                i += 1
                continue
            break
        raw = text[start:i]
        if text.startswith("\r\n", i):
            i += 2
        elif i < n:
            i += 1
        records.append((fields, raw))
    return records


def _parquet_rows(
    path: Path, spec: TableColumns, layout: FeedLayout, has_op: bool
) -> Iterator[tuple[int, list[Field] | str]] | None:
    """Rows of a Parquet file as fields holding Parquet's own typed values."""
    if not path.name.endswith(".parquet"):
        return None
    table = pq.read_table(io.BytesIO(path.read_bytes()))
    names = [*(["Op"] if has_op else []), *([layout.timestamp] if layout.timestamp else [])]
    names += [c for c, _ in spec.columns]
    columns = [table.column(c).to_pylist() for c in names]

    def rows() -> Iterator[tuple[int, list[Field] | str]]:
        for i in range(table.num_rows):
            # Parquet has no null marker: every value is literal (as a quoted CSV field is), NULL is None.
            yield i + 1, [(col[i], True) for col in columns]

    return rows()
