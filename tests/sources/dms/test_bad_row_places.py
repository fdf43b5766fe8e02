"""Where a bad row is (issue 17, point 5): every row the CSV decoders reject says its byte range in the
file, and those bytes are exactly the row (a quarantine without the row's bytes finds it there). Random
files mixing good rows, rows of every bad kind, non-ASCII text, bytes that are not UTF-8, quoted delimiters
and row breaks, for the single- and multi-character row delimiters, a header row, and gzip files read
through the columnar fast path and its fallback. Also: which bad rows split into the table's columns
(their values by column) and which do not."""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.model import Column, TableId, TableSchema
from replicator.sources.dms.arrow import decode_csv_columnar
from replicator.sources.dms.csvfiles import BadRow, CsvLayout, decode_csv
from replicator.sources.dms.objects import stream_opener
from replicator.sources.dms.policy import where

T = TableId("dbo", "t")
SCHEMA = TableSchema(
    T, (Column.of("id", "bigint"), Column.of("name", "text"), Column.of("note", "text")), ("id",)
)
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "150"))

# Field texts: plain, empty, non-ASCII, the NULL marker, quoted with a delimiter, a quote or a row break.
texts = st.sampled_from(["a", "", "é☃", "NULL", '"x,y"', '"say ""hi"""', '"two\nlines"', '"a\r\nb"'])
bad_bytes = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x98"])  # invalid or cut UTF-8


@st.composite
def rows(draw: st.DrawFn) -> bytes:
    """One row, good or bad in any way the decoder knows."""
    kind = draw(st.sampled_from(["good", "op", "count", "utf8", "syntax", "empty"]))
    op = "X" if kind == "op" else draw(st.sampled_from(["I", "U", "D"]))
    fields = [op, str(draw(st.integers(0, 999))), draw(texts), draw(texts)]
    if kind == "count":
        fields = fields[: draw(st.integers(1, 3))] if draw(st.booleans()) else [*fields, "extra"]
    if kind == "syntax":
        fields[2] = '"open"x'
    if kind == "empty":
        return b""
    row = ",".join(fields).encode()
    if kind == "utf8":
        at = draw(st.integers(0, len(row)))
        row = row[:at] + draw(bad_bytes) + row[at:]
    return row


def _bad_rows(data: bytes, layout: CsvLayout, *, gz: bool = False) -> list[BadRow]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.csv"
        path.write_bytes(gzip.compress(data) if gz else data)
        with path.open("rb") as f:
            items = decode_csv_columnar(
                stream_opener(f, gz=gz), layout, position_prefix="2/f ", has_op=True, decompressed=gz
            )
            return [i for i in items if isinstance(i, BadRow)]


def _check_places(data: bytes, bad: list[BadRow], *, gz: bool = False) -> None:
    for b in bad:
        assert b.span is not None and b.decompressed is gz and b.group is None, b
        offset, length = b.span
        assert data[offset : offset + length] == b.data, (b, data)
        assert length == len(b.data)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(rows(), min_size=1, max_size=12), crlf=st.booleans(), last_break=st.booleans())
def test_every_bad_row_s_byte_range_holds_exactly_its_bytes(
    lines: list[bytes], crlf: bool, last_break: bool
) -> None:
    delim = "\r\n" if crlf else "\n"
    data = delim.encode().join(lines) + (delim.encode() if last_break else b"")
    layout = CsvLayout(T, SCHEMA, row_delimiter=delim)
    bad = _bad_rows(data, layout)
    _check_places(data, bad)
    items = decode_csv(io.BytesIO(data), layout, position_prefix="2/f ", has_op=True)
    direct = [i for i in items if isinstance(i, BadRow)]
    assert direct == bad  # the fast path's fallback and the row decoder agree, places included


def test_a_gzip_file_s_bad_rows_are_placed_in_its_decompressed_bytes() -> None:
    data = b"I,1,one,NULL\nX,2,two,NULL\nI,3,caf\xc3\xa9,NULL\nI,4\nI,5,\xff,NULL\n"
    bad = _bad_rows(data, CsvLayout(T, SCHEMA), gz=True)
    assert [(b.row, b.reason) for b in bad] == [(2, "unknown_op"), (4, "column_count"), (5, "invalid_utf8")]
    _check_places(data, bad, gz=True)
    assert where(bad[0]) == "bytes 13-24 of the decompressed file"


def test_rows_after_a_header_are_placed_past_it_and_split_by_its_column_order() -> None:
    data = b"Op,note,id,name\nI,n,1,one\nX,n2,2,two\nI,3\n"
    layout = CsvLayout(T, SCHEMA, header=True)
    bad = _bad_rows(data, layout)
    _check_places(data, bad)
    assert [(b.row, b.reason) for b in bad] == [(2, "unknown_op"), (3, "column_count")]
    assert bad[0].values == {"id": "2", "name": "two", "note": "n2"}
    assert bad[1].values is None


def test_which_bad_rows_keep_their_values() -> None:
    """A row that splits into the table's columns keeps its values by column (NULL marker unquoted is
    None, quoted it is text; bytes that are not UTF-8 stay escaped surrogates); one that does not keeps
    none."""
    data = (
        b'X,1,"NULL",NULL\n'  # unknown_op
        b"I,2,caf\xff,x\n"  # invalid_utf8, splits
        b"I,3,\xff\n"  # invalid_utf8, too few fields
        b'I,4,"a"b,c\n'  # csv_syntax
        b"I,5,a,b,c\n"  # column_count
    )
    bad = _bad_rows(data, CsvLayout(T, SCHEMA))
    assert [(b.reason, b.values) for b in bad] == [
        ("unknown_op", {"id": "1", "name": "NULL", "note": None}),
        ("invalid_utf8", {"id": "2", "name": "caf\udcff", "note": "x"}),
        ("invalid_utf8", None),
        ("csv_syntax", None),
        ("column_count", None),
    ]
    _check_places(data, bad)


def test_the_policies_apply_to_a_bad_row_s_values_as_the_stage_applies_them() -> None:
    from replicator.schema import ColumnPolicies
    from replicator.sources.dms.policy import with_policies

    policies = ColumnPolicies({"a": "hash", "b": "drop", "c": "null", "d": "encrypt"}, b"k" * 32)
    values = {
        "id": "1",
        "a": "Secret",
        "b": "Secret",
        "c": "Secret",
        "d": "Secret",
        "e": "caf\udcff",
        "f": None,
    }
    assert with_policies(values, policies) == {
        "id": "1",
        "a": policies.hash("Secret"),
        "c": None,  # "d": a rule this code does not know is left out, never kept in clear
        "e": "caf\\xff",
        "f": None,
    }
    assert with_policies({"a": "caf\udcff", "b": None}, policies) == {"a": policies.hash("caf\\xff")}
