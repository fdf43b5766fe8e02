"""The row scanner (``rowscan``): the compiled scanner and its pure-Python twin give identical results on
generated pgoutput messages of every type, and both agree with the full decoder on the rows they take.

The compiled one is built by scripts/build_ext.sh; without it these comparisons skip locally and fail in CI
(``CI=true``, as scripts/test.sh sets), where the build must have happened."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.sources.postgres import pgoutput as pg
from replicator.sources.postgres import rowscan
from tests.helpers.pgoutput import raw_values

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pgoutput"
PREFIX = "00000000016B3748."


def compiled() -> Any:
    if rowscan.compiled is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the compiled row scanner is not built (scripts/build_ext.sh)")
        pytest.skip("the compiled row scanner is not built (scripts/build_ext.sh)")
    return rowscan.compiled


# -- pgoutput messages, encoded as PostgreSQL sends them -------------------------------------------------

Value = bytes | None | str  # bytes: text value; None: NULL; "u": unchanged TOAST; "b": binary


def tuple_data(values: Sequence[Value]) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == "u":
            out += b"u"
        elif isinstance(v, str):  # binary
            out += b"b" + struct.pack(">i", 1) + b"\x01"
        else:
            out += b"t" + struct.pack(">i", len(v)) + v
    return out


def row_message(
    tag: bytes, rel: int, values: Sequence[Value], *, flag: bytes = b"N", old: Sequence[Value] | None = None
) -> bytes:
    head = tag + struct.pack(">I", rel)
    if old is not None:
        head += flag + tuple_data(old) + b"N"
        return head + tuple_data(values)
    return head + flag + tuple_data(values)


texts = st.one_of(
    st.binary(max_size=12),
    st.text(max_size=6).map(str.encode),
    st.sampled_from([b"", b"NaN", "h\u00e9llo".encode(), b"\xff\xfe"]),  # the last is not UTF-8
)
plain_values = st.one_of(texts, st.none())
any_values = st.one_of(plain_values, st.sampled_from(["u", "b"]))
RELS = (16384, 16385, 99999)  # two with sinks, one without


@st.composite
def row_messages(draw: st.DrawFn) -> bytes:
    rel = draw(st.sampled_from(RELS))
    width = draw(st.sampled_from([3, 3, 3, 2, 4]))  # mostly the relation's width
    values = draw(st.lists(st.one_of(plain_values, plain_values, any_values), min_size=width, max_size=width))
    kind = draw(st.sampled_from(["I", "U", "U-old", "U-key", "D-key", "D-old", "D-new"]))
    if kind == "I":
        return row_message(b"I", rel, values)
    if kind == "U":
        return row_message(b"U", rel, values)
    if kind.startswith("U-"):
        flag = b"O" if kind == "U-old" else b"K"
        return row_message(
            b"U", rel, values, flag=flag, old=draw(st.lists(plain_values, min_size=width, max_size=width))
        )
    flag = {"D-key": b"K", "D-old": b"O", "D-new": b"N"}[kind]
    return row_message(b"D", rel, values, flag=flag)


def other_messages() -> st.SearchStrategy[bytes]:
    lsn = struct.pack(">Q", 0x16B3748)
    return st.sampled_from([
        b"B" + lsn + struct.pack(">qI", 1, 7),
        b"C" + b"\x00" + lsn + lsn + struct.pack(">q", 1),
        b"O" + lsn + b"origin\x00",
        b"R" + struct.pack(">I", 16384) + b"public\x00t\x00d" + struct.pack(">h", 1) + b"\x01id\x00"
        + struct.pack(">Ii", 20, -1),
        b"Y" + struct.pack(">I", 777) + b"public\x00mood\x00",
        b"T" + struct.pack(">Ib", 1, 0) + struct.pack(">I", 16384),
        b"M" + b"\x01" + lsn + b"p\x00" + struct.pack(">I", 2) + b"hi",
        b"S" + struct.pack(">Ib", 9, 1),
        b"E",
        b"c" + struct.pack(">Ib", 9, 0) + lsn + lsn + struct.pack(">q", 1),
        b"A" + struct.pack(">II", 9, 9),
    ])  # fmt: skip


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    data = draw(st.one_of(row_messages(), row_messages(), row_messages(), other_messages()))
    cut = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, max(0, len(data) - 1))))
    return data if cut is None else data[:cut]  # sometimes truncated: malformed


# -- both scanners, driven as the source drives them -------------------------------------------------------

SHAPES = {16384: (None, 3), 16385: ([2, -1, 0], 3)}  # relation -> (index, width)


def drive(
    run: list[bytes], sink_type: Any, scan: Any, *, limit: int, cap: int
) -> tuple[list[Any], list[Any]]:
    """Scan ``run`` as the source does: the scanner takes what it can; a row it stops at is added one by one
    (and begins its sink for the transaction); anything else is skipped. Returns the trace of every step
    and what each sink holds at the end (as Python values)."""
    sinks = {rel: sink_type(index, width) for rel, (index, width) in SHAPES.items()}
    names = {id(s): rel for rel, s in sinks.items()}
    touched: list[Any] = []
    trace: list[Any] = []
    chunks: list[Any] = []
    i, ordinal = 0, 0
    while i < len(run):
        i, ordinal, full = scan(run, i, sinks, ordinal, 1, touched, limit, cap)
        trace.append(("scan", i, ordinal, names.get(id(full)), [names[id(s)] for s in touched]))
        if full is not None:
            chunks.append(take(full))
            continue
        if i >= len(run):
            break
        payload = run[i]
        i += 1
        if len(payload) >= 5 and payload[0] in b"IUD":
            sink = sinks.get(int.from_bytes(payload[1:5]))
            if sink is not None:
                added = sink.add(payload, PREFIX, ordinal + 1)
                trace.append(("add", added))
                if added:
                    ordinal += 1
                    if sink.serial != 1:
                        sink.begin(1, PREFIX)
                    if sink.rows >= limit or sink.nbytes >= cap:
                        chunks.append(take(sink))
    chunks += [take(s) for s in sinks.values()]
    return trace, chunks


def take(sink: Any) -> Any:
    n = sink.rows
    positions = [sink.position(k) for k in range(n)]
    if isinstance(sink, rowscan.PureSink):
        try:
            arrays = sink.arrays()
        except pa.ArrowInvalid:
            return ("not utf-8", n, positions)
    else:
        arrays = [rowscan._string_array(n, b) for b in sink.take()]
        try:
            for a in arrays:
                a.validate(full=True)
        except pa.ArrowInvalid:
            return ("not utf-8", n, positions)
    return (n, positions, [a.to_pylist() for a in arrays], sink.rows, sink.serial)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    run=st.lists(payloads(), max_size=40),
    limit=st.integers(1, 8),
    cap=st.sampled_from([10, 100, 1 << 20]),
)
def test_the_compiled_and_the_pure_scanner_give_identical_results_on_generated_messages(
    run: list[bytes], limit: int, cap: int
) -> None:
    c = compiled()
    assert drive(run, c.Sink, c.scan, limit=limit, cap=cap) == drive(
        run, rowscan.PureSink, rowscan.pure_scan, limit=limit, cap=cap
    )


@settings(max_examples=300, deadline=None)
@given(payload=payloads())
def test_a_row_the_scanners_take_holds_exactly_the_values_the_full_decoder_gives(payload: bytes) -> None:
    c = compiled()
    for rel, (index, width) in SHAPES.items():
        pure, fast = rowscan.PureSink(index, width), c.Sink(index, width)
        added = pure.add(payload, PREFIX, 5)
        assert fast.add(payload, PREFIX, 5) == added
        if not added:
            assert pure.rows == fast.rows == 0
            continue
        got = take(fast)
        assert got == take(pure)
        raw = raw_values(payload, 6)  # the tuple's values as bytes (the old fast path)
        assert raw is not None
        mapped = raw if index is None else [raw[j] if j >= 0 else None for j in index]
        if any(v is not None and not _utf8(v) for v in mapped):
            assert got[0] == "not utf-8"  # a value that is not UTF-8: refused in bulk by Arrow
            continue
        assert [col[0] for col in got[2][:-2]] == [None if v is None else v.decode() for v in mapped]
        assert got[2][-2:] == [[chr(payload[0])], [PREFIX + "000000000005"]]
        if all(v is None or _utf8(v) for v in raw):  # then the full decoder reads the same row
            msg = pg.Decoder().decode(payload)
            assert isinstance(msg, pg.Insert | pg.Update | pg.Delete)
            data = msg.old if isinstance(msg, pg.Delete) else msg.new
            assert data is not None and not data.unchanged
            assert not isinstance(msg, pg.Update) or msg.old is None
            assert data.values == tuple(None if v is None else v.decode() for v in raw)


def test_captured_pgoutput_streams_scan_alike() -> None:
    """The bytes PostgreSQL 15 sent (fixtures): every payload of both protocol versions, as one run."""
    c = compiled()
    for name in ("v1", "v2_stream"):
        data = (FIXTURES / f"{name}.bin").read_bytes()
        run, pos = [], 0
        while pos < len(data):
            (length,) = struct.unpack_from(">I", data, pos)
            run.append(data[pos + 4 : pos + 4 + length])
            pos += 4 + length
        assert drive(run, c.Sink, c.scan, limit=3, cap=1 << 20) == drive(
            run, rowscan.PureSink, rowscan.pure_scan, limit=3, cap=1 << 20
        )


def test_a_sink_refuses_what_is_not_its_contract() -> None:
    c = compiled()
    for sink_type in (c.Sink, rowscan.PureSink):
        with pytest.raises(ValueError, match="index entry out of range"):
            sink_type([3], 2)
        sink = sink_type(None, 1)
        with pytest.raises(ValueError, match="prefix"):
            sink.add(row_message(b"I", 1, [b"x"]), "0/1.", 1)
        with pytest.raises(OverflowError):
            sink.add(row_message(b"I", 1, [b"x"]), PREFIX, 1 << 48)
        assert sink.add(row_message(b"I", 1, [b"x"]), PREFIX, (1 << 48) - 1)
        assert sink.position(-1) == PREFIX + "FFFFFFFFFFFF"


def _utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True
