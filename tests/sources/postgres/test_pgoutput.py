"""The pgoutput decoder on bytes captured from PostgreSQL 15 (made by
``tests/sources/postgres/fixtures/pgoutput/capture.py``)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from replicator.sources.postgres import pgoutput as pg
from replicator.sources.postgres.source import column_type, decode_position, encode_position
from tests.helpers.pgoutput import raw_values

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pgoutput"


def messages(name: str) -> list[pg.Message]:
    data = (FIXTURES / f"{name}.bin").read_bytes()
    decoder = pg.Decoder()
    out: list[pg.Message] = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append(decoder.decode(data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def test_protocol_1_fixture_decodes_into_the_expected_message_sequence() -> None:
    kinds = [type(m).__name__ for m in messages("v1")]
    assert kinds == [
        "Begin", "Type", "Relation", "Insert", "Commit",
        "Begin", "Insert", "Commit",
        "Begin", "Update", "Commit",
        "Begin", "Update", "Commit",
        "Begin", "Delete", "Commit",
        "Begin", "Relation", "Insert", "Insert", "Commit",
        "Begin", "Update", "Update", "Commit",
        "Begin", "Delete", "Delete", "Commit",
        "Begin", "Insert", "LogicalMessage", "Commit",
        "LogicalMessage",
        "Begin", "Type", "Relation", "Relation", "Truncate", "Commit",
        "Begin", "Type", "Relation", "Insert", "Commit",
    ]  # fmt: skip


def test_every_type_arrives_as_its_exact_wire_text() -> None:
    insert = next(m for m in messages("v1") if isinstance(m, pg.Insert))
    assert insert.new == pg.TupleData(
        (
            "1", "10", "one", "2024-01-02 03:04:05.123456+00", "NaN", "t", "2024-02-29", "13:14:15.5",
            "1 day 02:03:04", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", '{"k": [1, "x"]}', "\\x00ff10",
            "{1,NULL,3}", "happy", 'tab\tnl\nq"', "ab ", "-3", "2024-01-02 03:04:05", "[1,2]",
        )
    )  # fmt: skip


def test_relation_describes_columns_types_and_replica_identity() -> None:
    rel = next(m for m in messages("v1") if isinstance(m, pg.Relation))
    assert (rel.namespace, rel.name, rel.replica_identity) == ("public", "t", "default")
    assert [(c.name, c.type_oid, c.key) for c in rel.columns[:5]] == [
        ("id", 20, True), ("a", 23, False), ("b", 25, False), ("c", 1184, False), ("d", 1700, False),
    ]  # fmt: skip
    assert str(column_type(1043, 14)) == "varchar(10)"
    assert str(column_type(1700, ((12 << 16) | 2) + 4)) == "numeric(12,2)"
    assert str(column_type(1186, -1)) == "interval"  # staged as its text, typed where the target has it
    assert str(column_type(12345, -1)) == "text"  # a type this build does not know (an enum) stays text


def test_an_update_that_leaves_a_toast_value_alone_marks_it_unchanged() -> None:
    update = next(m for m in messages("v1") if isinstance(m, pg.Update))
    assert update.old is None
    assert update.new.values[:3] == ("2", "20", None)
    assert update.new.unchanged == (2,)


def test_a_key_change_sends_the_old_key_and_a_delete_sends_only_the_key() -> None:
    msgs = messages("v1")
    key_change = [m for m in msgs if isinstance(m, pg.Update)][1]
    assert key_change.old_is_key and key_change.old is not None
    assert key_change.old.values[0] == "1" and key_change.new.values[0] == "3"
    delete = next(m for m in msgs if isinstance(m, pg.Delete))
    assert delete.old_is_key and delete.old.values == ("3",) + (None,) * 18


def test_replica_identity_full_sends_the_whole_old_row() -> None:
    msgs = messages("v1")
    nopk = next(m for m in msgs if isinstance(m, pg.Relation) and m.name == "nopk")
    assert nopk.replica_identity == "full"
    update = [m for m in msgs if isinstance(m, pg.Update)][2]
    assert update.old == pg.TupleData(("1", "a")) and not update.old_is_key
    assert update.new == pg.TupleData(("1", "b"))


def test_truncate_messages_and_logical_messages_decode() -> None:
    msgs = messages("v1")
    truncate = next(m for m in msgs if isinstance(m, pg.Truncate))
    rels = {m.relation_id for m in msgs if isinstance(m, pg.Relation)}
    assert set(truncate.relation_ids) == rels and not truncate.cascade
    logical = [m for m in msgs if isinstance(m, pg.LogicalMessage)]
    assert [(m.transactional, m.prefix, m.content) for m in logical] == [
        (True, "pfx", b"hello"),
        (False, "nontx", b"\x00\x01"),
    ]


def test_begin_carries_the_commit_lsn_before_the_rows() -> None:
    msgs = messages("v1")
    for begin, commit in zip(
        [m for m in msgs if isinstance(m, pg.Begin)],
        [m for m in msgs if isinstance(m, pg.Commit)],
        strict=True,
    ):
        assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
        assert begin.commit_time == commit.commit_time


def test_protocol_2_streams_a_big_transaction_in_blocks_and_an_aborted_one_ends_in_stream_abort() -> None:
    msgs = messages("v2_stream")
    starts = [m for m in msgs if isinstance(m, pg.StreamStart)]
    assert len({m.xid for m in starts}) == 2 and starts[0].first_segment
    commit = next(m for m in msgs if isinstance(m, pg.StreamCommit))
    abort = next(m for m in msgs if isinstance(m, pg.StreamAbort))
    committed_rows = [m for m in msgs if isinstance(m, pg.Insert) and m.xid == commit.xid]
    assert [r.new.values[0] for r in committed_rows] == [str(i) for i in range(100, 2100)]
    assert abort.xid == abort.subxid != commit.xid
    assert all(
        m.xid == abort.xid for m in msgs if isinstance(m, pg.Insert) and m.xid not in (None, commit.xid)
    )
    # after the streamed ones, a small transaction arrives whole with no xid prefix
    tail = msgs[-3:]
    assert [type(m).__name__ for m in tail] == ["Begin", "Insert", "Commit"]
    assert isinstance(tail[1], pg.Insert) and tail[1].xid is None and tail[1].new.values[0] == "7000"


def test_malformed_and_unknown_messages_raise_a_protocol_error() -> None:
    with pytest.raises(pg.ProtocolError, match="unknown message type"):
        pg.Decoder().decode(b"Z\x00")
    with pytest.raises(pg.ProtocolError, match="malformed 'I'"):
        pg.Decoder().decode(b"I\x00\x00")
    with pytest.raises(pg.ProtocolError, match="empty"):
        pg.Decoder().decode(b"")


def test_positions_sort_as_the_source_orders_changes() -> None:
    ordered = [(0x16B3748, 1), (0x16B3748, 2), (0x16B3748, 16), (0x100000000, 0), (0xFFFF_FFFF_FFFF, 3)]
    encoded = [encode_position(lsn, n) for lsn, n in ordered]
    assert sorted(encoded) == encoded
    assert [decode_position(p) for p in encoded] == ordered
    assert pg.lsn_text(pg.parse_lsn("16/B374D848")) == "16/B374D848"


def test_decoding_a_row_takes_a_few_microseconds() -> None:
    insert = next(m for m in messages("v2_stream") if isinstance(m, pg.Insert))
    raw = b"I" + struct.pack(">I", insert.relation_id) + b"N" + struct.pack(">h", 5)
    for v in ("123456", "42", "some text value", "2024-01-02 03:04:05.123456+00", "12345.67"):
        raw += b"t" + struct.pack(">i", len(v)) + v.encode()
    decoder = pg.Decoder()
    n = 100_000
    started = time.perf_counter()
    for _ in range(n):
        decoder.decode(raw)
    per_row = (time.perf_counter() - started) / n * 1e6
    print(f"pgoutput decode: {per_row:.2f} us/row (5 columns)")
    assert per_row < 50  # generous: the machine is shared; the figure is what matters


def _payloads(name: str) -> list[bytes]:
    data = (FIXTURES / f"{name}.bin").read_bytes()
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return out


def test_the_decoder_reads_each_tuple_as_an_independent_reading_does_and_marks_unchanged_toast() -> None:
    decoder = pg.Decoder()
    compared = deferred = 0
    for payload in _payloads("v1"):
        msg = decoder.decode(payload)
        if isinstance(msg, pg.Insert) or (isinstance(msg, pg.Update) and msg.old is None):
            raw = raw_values(payload, 6)
            if msg.new.unchanged:
                assert raw is None  # the caller takes the full decoder's way
                deferred += 1
            else:
                assert raw is not None
                assert [None if v is None else v.decode() for v in raw] == list(msg.new.values)
                compared += 1
    assert compared >= 5 and deferred >= 1
