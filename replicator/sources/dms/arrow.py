"""DMS CSV read column-wise with ``pyarrow.csv``: the fast path of ``dms_csv``, exact or not taken at all.

``decode_csv_columnar`` yields ``ChangeChunk``s with the same values, ops, commit times and positions
(``<prefix><row:010d>``, rows numbered as ``dms_csv`` numbers them) that ``decode_csv`` would yield as
``Change``s. pyarrow is more lenient than DMS's format: it accepts ``\\r`` as a row break, a stray quote
after a quoted field, empty lines and a byte order mark, and it knows nothing of unknown Op values. So
every byte goes through ``_Guard`` on its way to pyarrow, and every block is checked (Op values, timestamps)
before it is yielded; at the first irregularity, or any pyarrow error (wrong column count, non-UTF-8, bad
gzip), the rest of the file from the first row not yet yielded is read by ``decode_csv``, which sets bad
rows aside precisely. Layouts the fast path does not cover (``Rfc4180=false``, multi-character delimiters,
a row delimiter other than ``\\n``, UseCsvNoSupValue, a header row) always take ``decode_csv``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from replicator.model import (
    COMMIT_TIME_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    Change,
    ChangeChunk,
    Op,
    SchemaChange,
)
from replicator.sources.dms.csvfiles import ROW_DIGITS, BadRow, CsvLayout, decode_csv

BLOCK = 4 << 20  # bytes per pyarrow block: one chunk of roughly 40k rows, memory bounded by a few blocks
_OPS = pa.array(["I", "U", "D"], pa.string())
_QUOTES = re.compile(rb'"+')


class _Irregular(Exception):
    """pyarrow would read this input differently from DMS's format rules: use the row decoder."""


def fast_path_covers(layout: CsvLayout) -> bool:
    return (
        layout.rfc4180
        and len(layout.delimiter) == 1
        and layout.delimiter not in '"\r\n'
        and layout.row_delimiter == "\n"
        and layout.no_sup_value is None
        and not layout.header
    )


def decode_csv_columnar(
    open_stream: Callable[[], IO[bytes]],
    layout: CsvLayout,
    *,
    position_prefix: str,
    has_op: bool,
    default_op: Op = Op.INSERT,
    skip: int = 0,
    decompressed: bool = False,
) -> Iterator[ChangeChunk | Change | BadRow | SchemaChange]:
    """Like ``dms_csv.decode_csv`` (same arguments, but a function opening the file's byte stream from its
    start, as the fallback reads it again), yielding chunks where it can and what ``decode_csv`` yields
    from the first row it cannot."""
    if not fast_path_covers(layout):
        yield from decode_csv(open_stream(), layout, position_prefix=position_prefix, has_op=has_op,
                              default_op=default_op, skip=skip, decompressed=decompressed)  # fmt: skip
        return
    done = skip  # every row up to here is yielded (or was acknowledged before)
    try:
        for chunk in _chunks(open_stream(), layout, position_prefix, has_op, default_op, skip):
            yield chunk
            done += len(chunk)
    except (_Irregular, pa.ArrowException, OSError, EOFError, ValueError):
        # Includes a damaged gzip stream (zlib.error and gzip.BadGzipFile are OSError/ValueError kinds,
        # EOFError for a truncated one): the row decoder meets it again and reports it as before.
        yield from decode_csv(open_stream(), layout, position_prefix=position_prefix, has_op=has_op,
                              default_op=default_op, skip=done, decompressed=decompressed)  # fmt: skip


def _chunks(  # noqa: PLR0917 - one private call site
    stream: IO[bytes], layout: CsvLayout, prefix: str, has_op: bool, default_op: Op, skip: int
) -> Iterator[ChangeChunk]:
    schema = layout.schema
    ts_at = (1 if has_op else 0) if layout.timestamp_column else None
    start = int(has_op) + int(ts_at is not None)
    width = start + len(schema.columns)
    names = [f"f{i}" for i in range(width)]
    reader = pacsv.open_csv(
        _Guard(stream, layout.delimiter),
        read_options=pacsv.ReadOptions(column_names=names, block_size=BLOCK, use_threads=False),
        parse_options=pacsv.ParseOptions(
            delimiter=layout.delimiter, quote_char='"', double_quote=True, escape_char=False,
            newlines_in_values=True, ignore_empty_lines=False,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), null_values=[layout.null_value],
            strings_can_be_null=True, quoted_strings_can_be_null=False,
        ),
    )  # fmt: skip
    row = 0  # rows read so far
    for block in reader:
        first, row = row, row + block.num_rows
        if row <= skip or block.num_rows == 0:
            continue
        part = block.slice(skip - first) if first < skip else block
        yield _chunk(part, layout, prefix, max(first, skip), has_op, default_op, ts_at, start)


def _chunk(  # noqa: PLR0917 - one private call site
    batch: pa.RecordBatch,
    layout: CsvLayout,
    prefix: str,
    first: int,
    has_op: bool,
    default_op: Op,
    ts_at: int | None,
    start: int,
) -> ChangeChunk:
    n = batch.num_rows
    if has_op:
        ops = batch.column(0)
        if not pc.all(pc.is_in(ops, value_set=_OPS)).as_py() or ops.null_count:
            raise _Irregular("an Op that is not I, U or D")
    else:
        ops = pa.repeat(pa.scalar(default_op.value, pa.string()), n)
    if ts_at is not None:
        try:
            times = pc.cast(batch.column(ts_at), pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
        except pa.ArrowException:
            raise _Irregular("a timestamp that does not parse") from None
    else:
        times = pa.nulls(n, pa.timestamp("us", tz="UTC"))
    return ChangeChunk(
        layout.table,
        layout.schema,
        pa.Table.from_arrays(
            [*batch.columns[start:], ops, positions(prefix, first + 1, n), times],
            names=[*layout.schema.column_names, OP_COLUMN, POSITION_COLUMN, COMMIT_TIME_COLUMN],
        ),
    )


def positions(prefix: str, first_row: int, n: int) -> pa.Array:
    """``prefix`` + zero-padded row numbers from ``first_row``, ``n`` of them (``dms.encode_position``)."""
    rows = pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n), start=first_row - 1)  # no Python loop
    numbers = pc.cast(rows, pa.string())
    padded = pc.utf8_lpad(numbers, width=ROW_DIGITS, padding="0")
    joined: pa.Array = pc.binary_join_element_wise(pa.scalar(prefix), padded, "")
    return joined


class _Guard(io.RawIOBase):
    """Hands the file's bytes to pyarrow, raising ``_Irregular`` at the first thing pyarrow would read
    differently from DMS's rules: ``\\r``, an empty line, a byte order mark, a quote inside an unquoted field,
    a closing quote not followed by a delimiter or row break, an unterminated quote.

    Quote runs are tracked across reads (``held`` keeps the byte before any undecided run), so only bytes
    holding quotes cost more than a scan for ``\\r`` and an empty line.
    """

    def __init__(self, raw: IO[bytes], delimiter: str) -> None:
        super().__init__()
        self.raw = raw
        self.ends = (ord(delimiter), ord("\n"))
        self.held = b"\n"  # the byte before the next unchecked byte (the file starts like a row)
        self.in_quotes = False
        self.started = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(b))
        self._check(data)
        n = len(data)
        b[:n] = data
        return n

    def _check(self, data: bytes) -> None:
        eof = not data
        if not self.started and data:
            self.started = True
            if data.startswith(b"\xef\xbb\xbf"):
                raise _Irregular("byte order mark")
        buf = self.held + data
        if b"\r" in data or b"\n\n" in buf:
            raise _Irregular("carriage return or empty line")
        if b'"' in buf:
            for m in _QUOTES.finditer(buf):
                s, e = m.span()
                if e == len(buf) and not eof:
                    self.held = buf[s - 1 :]  # the run may go on in the next read
                    return
                self._run(buf[s - 1], e - s, buf[e] if e < len(buf) else None)
        if eof and self.in_quotes:
            raise _Irregular("unterminated quote")
        self.held = buf[-1:] or self.held

    def _run(self, before: int, k: int, after: int | None) -> None:
        if not self.in_quotes:
            if before not in self.ends:
                raise _Irregular("quote inside an unquoted field")
            if k % 2:
                self.in_quotes = True  # opens (escaped pairs may follow)
                return
        elif k % 2 == 0:
            return  # escaped quotes inside a quoted field
        self.in_quotes = False  # the run closes a quoted field
        if after is not None and after not in self.ends:
            raise _Irregular("a closing quote not followed by a delimiter or row break")
