"""The DMS source against real files: a local folder and the moto S3 server, laid out as DMS writes them."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from replicator.model import Change, Column, Op, Position, SchemaChange, TableId, TableSchema
from replicator.obs import metrics
from replicator.sources.dms.source import DmsOptions, DmsSource, decode_position, encode_position
from replicator.storage import LocalStore, ObjectStore, Quarantine, S3Settings, S3Store
from tests.helpers.dms import put
from tests.helpers.dms_chunks import expand

T = TableId("dbo", "t")
U = TableId("sales", "orders")
SCHEMAS = {
    T: TableSchema(
        T, (Column.of("id", "bigint"), Column.of("name", "text"), Column.of("note", "text")), ("id",)
    ),
    U: TableSchema(U, (Column.of("order_id", "bigint"), Column.of("amount", "numeric(12,2)")), ("order_id",)),
}
CDC1, CDC2, CDC3, CDC4 = (f"20141029-11{m}010000.csv" for m in ("34", "35", "36", "37"))


@pytest.fixture
def local(tmp_path: Path) -> tuple[ObjectStore, ObjectStore]:
    return LocalStore(tmp_path / "dms"), LocalStore(tmp_path / "staging")


def source(stores: tuple[ObjectStore, ObjectStore], **options: object) -> DmsSource:
    """A source whose bad input is quarantined and skipped (the stop policy has its own tests)."""
    data, state = stores
    options.setdefault("bad_input_policy", "quarantine")
    client = options.pop("sqs_client", None)
    return DmsSource(
        data,
        SCHEMAS,
        state=state,
        quarantine=Quarantine(state),
        options=DmsOptions(**options),  # type: ignore[arg-type]
        sqs_client=client,
    )


def rows(changes: list[Change], table: TableId = T) -> list[tuple[str, tuple[str | None, ...]]]:
    return [(c.op.value, c.values) for c in changes if isinstance(c, Change) and c.table == table]


def notes(stores: tuple[ObjectStore, ObjectStore]) -> list[dict[str, object]]:
    return sorted(Quarantine(stores[1]).items(), key=lambda n: (str(n["source"]), str(n["row"])))


def state_doc(stores: tuple[ObjectStore, ObjectStore], table: TableId = T) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(stores[1].get(f"_state/dms/{table.schema}.{table.name}.json"))
    return doc


def feed(store: ObjectStore) -> None:
    """Two full-load files (hex counter: 2 sorts before A) and two CDC files, written out of name order."""
    put(store, T, CDC2, "U,1,one,second\nD,2,two,NULL\n")
    put(store, T, "LOAD0000000A.csv", "3,three,NULL\n")
    put(store, T, CDC1, "I,4,four,NULL\nU,1,one,first\n")
    put(store, T, "LOAD00000002.csv", "1,one,NULL\n2,two,NULL\n")


EXPECTED = [
    ("I", ("1", "one", None)),
    ("I", ("2", "two", None)),
    ("I", ("3", "three", None)),
    ("I", ("4", "four", None)),
    ("U", ("1", "one", "first")),
    ("U", ("1", "one", "second")),
    ("D", ("2", "two", None)),
]


# -- order and positions ---------------------------------------------------------------------------------


def test_full_load_files_come_before_cdc_files_each_in_name_order(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    feed(stores[0])
    got = expand(source(stores).read())
    assert rows(got) == EXPECTED
    values = [c.position.value for c in got]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert values[0] == "1/LOAD00000002.csv 0000000001"
    assert values[-1] == f"2/{CDC2} 0000000002"


def test_position_text_order_is_read_order_including_names_that_prefix_others() -> None:
    in_read_order = [
        encode_position("1/LOAD00000009.csv", 1),
        encode_position("1/LOAD0000000A.csv", 1),
        encode_position("2/20141029-1134010000.csv", 9),
        encode_position("2/20141029-1134010000.csv", 10),
        encode_position("2/20141029-1134010000.csv", 1_000_000_000),
        encode_position("2/20141029-1134010000.csv.gz", 1),  # the plain name is a prefix of this one
    ]
    assert sorted(in_read_order) == in_read_order
    # Date-partitioned names (the later format issue) keep the rule: the key below the table sorts by time.
    assert encode_position("2/2014/10/29/20141029-2359000000.csv", 5) < encode_position(
        "2/2014/10/30/20141030-0000000000.csv", 1
    )
    assert sorted(p.value for p in in_read_order) == [p.value for p in in_read_order]
    assert decode_position(Position("2/x y.csv 0000000042")) == ("2/x y.csv", 42)


def test_each_table_is_read_in_its_own_order_and_all_tables_are_read(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    feed(stores[0])
    put(stores[0], U, "LOAD00000001.csv", "10,1.50\n")
    put(stores[0], U, CDC1, "U,10,2.50\n")
    got = expand(source(stores).read())
    assert rows(got) == EXPECTED
    assert rows(got, U) == [("I", ("10", "1.50")), ("U", ("10", "2.50"))]
    assert [c.position.value for c in got if c.table == U] == [
        "1/LOAD00000001.csv 0000000001",
        f"2/{CDC1} 0000000001",
    ]


# -- resume ----------------------------------------------------------------------------------------------


def test_restart_after_an_ack_mid_file_resumes_at_the_next_row(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    feed(stores[0])
    first = source(stores)
    got = expand(first.read())
    first.ack({T: got[3].position})  # first row of CDC1
    assert state_doc(stores)["partial"] == {"file": f"2/{CDC1}", "rows": 1}
    assert state_doc(stores)["done"] == ["1/LOAD00000002.csv", "1/LOAD0000000A.csv"]
    again = expand(source(stores).read())
    assert rows(again) == EXPECTED[4:]


def test_restart_after_an_ack_at_a_file_end_skips_the_consumed_file(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    feed(stores[0])
    first = source(stores)
    got = expand(first.read())
    first.ack({T: got[4].position})  # last row of CDC1
    assert state_doc(stores)["partial"] is None
    assert state_doc(stores)["done"][-1] == f"2/{CDC1}"
    second = source(stores)
    assert rows(expand(second.read())) == EXPECTED[5:]
    put(stores[0], T, CDC3, "I,5,five,NULL\n")
    assert rows(expand(second.read())) == [("I", ("5", "five", None))]


def test_restart_without_any_ack_yields_everything_again(stores: tuple[ObjectStore, ObjectStore]) -> None:
    feed(stores[0])
    assert rows(expand(source(stores).read())) == EXPECTED
    assert rows(expand(source(stores).read())) == EXPECTED


def test_read_again_in_one_process_yields_only_new_changes(local: tuple[ObjectStore, ObjectStore]) -> None:
    feed(local[0])
    src = source(local)
    assert len(expand(src.read())) == 7
    assert expand(src.read()) == []  # unacked, but already handed out by this process
    put(local[0], T, CDC3, "I,5,five,NULL\n")
    assert rows(expand(src.read())) == [("I", ("5", "five", None))]


def test_a_consumer_that_stops_mid_file_gets_the_rest_on_the_next_read(
    local: tuple[ObjectStore, ObjectStore],
) -> None:
    feed(local[0])
    src = source(local)
    it = src.read()
    head = expand(next(it) for _ in range(2))
    it.close()  # type: ignore[attr-defined]  # a generator: the consumer stops mid-way
    tail = expand(src.read())
    assert rows(head + tail) == EXPECTED


def test_acks_are_idempotent_and_old_acks_do_not_move_progress_back(
    local: tuple[ObjectStore, ObjectStore],
) -> None:
    feed(local[0])
    src = source(local)
    got = expand(src.read())
    src.ack({T: got[5].position})
    src.ack({T: got[5].position})
    src.ack({T: got[1].position})
    assert state_doc(local)["partial"] == {"file": f"2/{CDC2}", "rows": 1}
    assert rows(expand(source(local).read())) == EXPECTED[6:]


# -- empty files and late files ---------------------------------------------------------------------------


def test_empty_files_are_quarantined_and_do_not_stall_the_table(
    local: tuple[ObjectStore, ObjectStore],
) -> None:
    put(local[0], T, "LOAD00000001.csv", "")
    put(local[0], T, "LOAD00000002.csv", "1,one,NULL\n")
    put(local[0], T, CDC1, "")
    src = source(local)
    got = expand(src.read())
    assert rows(got) == [("I", ("1", "one", None))]
    assert [n["reason"] for n in notes(local)] == ["empty_file", "empty_file"]
    # The leading empty file is consumed at once (nothing before it is pending); the trailing one as soon
    # as the row before it is acknowledged.
    assert state_doc(local)["done"] == ["1/LOAD00000001.csv"]
    src.ack({T: got[0].position})
    assert state_doc(local)["done"] == ["1/LOAD00000001.csv", "1/LOAD00000002.csv", f"2/{CDC1}"]
    put(local[0], T, CDC2, "I,2,two,NULL\n")
    assert rows(expand(source(local).read())) == [("I", ("2", "two", None))]


def test_a_late_file_sorting_before_read_files_stops_the_table_until_the_operator_decides(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    put(stores[0], T, CDC1, "I,1,one,NULL\n")
    put(stores[0], T, CDC3, "I,3,three,NULL\n")
    put(stores[0], U, CDC1, "I,10,1.50\n")
    src = source(stores)
    got = expand(src.read())
    src.ack({T: got[1].position})
    before = metrics.ERRORS.labels(stage="source", kind="out_of_order")._value.get()
    put(stores[0], T, CDC2, "I,2,late,NULL\n")  # named before CDC3, which is already consumed
    put(stores[0], T, CDC4, "I,4,four,NULL\n")
    put(stores[0], U, CDC2, "I,11,2.50\n")
    got = expand(src.read())
    assert rows(got) == [] and rows(got, U) == [("I", ("11", "2.50"))]  # the other table goes on
    assert metrics.ERRORS.labels(stage="source", kind="out_of_order")._value.get() == before + 1
    [problem] = src.problems()
    assert problem["table"] == "dbo.t" and problem["reason"] == "out_of_order"
    assert CDC2 in str(problem["source"]) and CDC3 in str(problem["detail"])
    [note] = notes(stores)
    assert note["reason"] == "out_of_order" and CDC2 in str(note["source"])
    # Stopped across restarts too, until the operator decides: here, leave the late file set aside.
    again = source(stores)
    assert rows(expand(again.read())) == [] and again.problems()[0]["reason"] == "out_of_order"
    again.resume(T, "skip")
    assert rows(expand(again.read())) == [("I", ("4", "four", None))]
    assert again.problems() == [] and len(notes(stores)) == 1


def test_a_late_file_before_a_partly_acked_file_is_set_aside_after_restart(
    local: tuple[ObjectStore, ObjectStore],
) -> None:
    put(local[0], T, CDC1, "I,1,one,NULL\n")
    put(local[0], T, CDC3, "I,3,three,NULL\nI,4,four,NULL\n")
    src = source(local)
    got = expand(src.read())
    src.ack({T: got[1].position})  # CDC3 row 1: CDC3 is partly staged
    put(local[0], T, CDC2, "I,2,late,NULL\n")
    again = source(local)
    assert rows(expand(again.read())) == []
    assert [n["reason"] for n in notes(local)] == ["out_of_order"]
    again.resume(T, "skip")
    assert rows(expand(again.read())) == [("I", ("4", "four", None))]


def test_a_full_load_file_appearing_during_cdc_is_set_aside(local: tuple[ObjectStore, ObjectStore]) -> None:
    feed(local[0])
    src = source(local)
    got = expand(src.read())
    src.ack({T: got[-1].position})
    put(local[0], T, "LOAD0000000B.csv", "9,nine,NULL\n")
    again = source(local)
    assert expand(again.read()) == []
    assert [n["reason"] for n in notes(local)] == ["out_of_order"]
    assert [p["reason"] for p in again.problems()] == ["out_of_order"]


def test_listing_starts_at_the_oldest_remembered_file(local: tuple[ObjectStore, ObjectStore]) -> None:
    names = [f"20141029-11{m:02d}010000.csv" for m in range(10)]
    for i, name in enumerate(names):
        put(local[0], T, name, f"I,{i},x,NULL\n")
    src = source(local, recent_files=3)
    got = expand(src.read())
    src.ack({T: got[-1].position})
    assert state_doc(local)["done"] == [f"2/{n}" for n in names[-3:]]
    put(local[0], T, "20141029-1100000000.csv", "I,99,too late to notice,NULL\n")  # before the window
    put(local[0], T, "20141029-1108500000.csv", "I,98,late,NULL\n")  # inside the window
    again = source(local, recent_files=3)
    assert expand(again.read()) == [] and again.problems()[0]["reason"] == "out_of_order"
    assert [str(n["source"]).rsplit("/", 1)[1] for n in notes(local)] == ["20141029-1108500000.csv"]


# -- unknown tables --------------------------------------------------------------------------------------


def test_files_of_an_unknown_table_are_quarantined_once_and_other_tables_go_on(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    feed(stores[0])
    stranger = TableId("dbo", "stranger")
    put(stores[0], stranger, "LOAD00000001.csv", "1,x\n")
    put(stores[0], stranger, CDC1, "I,2,y\n")
    src = source(stores)
    assert rows(expand(src.read())) == EXPECTED
    assert [(n["table"], n["reason"]) for n in notes(stores)] == [("dbo.stranger", "unknown_table")] * 2
    put(stores[0], stranger, CDC2, "I,3,z\n")
    expand(source(stores, discovery_interval_seconds=0).read())
    assert len(notes(stores)) == 3


# -- CSV content -----------------------------------------------------------------------------------------


def test_null_is_an_unquoted_marker_and_quoted_or_empty_fields_are_text(
    local: tuple[ObjectStore, ObjectStore],
) -> None:
    put(local[0], T, CDC1, 'I,1,NULL,""\nI,2,"NULL",\nI,3,"a ""NULL"" b",NULL\n')
    assert rows(expand(source(local).read())) == [
        ("I", ("1", None, "")),
        ("I", ("2", "NULL", "")),
        ("I", ("3", 'a "NULL" b', None)),
    ]


def test_an_empty_null_marker_makes_unquoted_empty_fields_null(
    local: tuple[ObjectStore, ObjectStore],
) -> None:
    put(local[0], T, CDC1, 'I,1,,""\nI,2,"say ""hi""",\nI,3,NULL,x\n')
    assert rows(expand(source(local, csv_null_value="").read())) == [
        ("I", ("1", None, "")),
        ("I", ("2", 'say "hi"', None)),
        ("I", ("3", "NULL", "x")),
    ]


def test_the_unquoted_no_sup_value_marks_a_column_unchanged_and_quoted_it_is_text(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    put(stores[0], T, CDC1, 'U,1,#NS#,NULL\nU,2,"#NS#",#NS#\nI,3,three,NULL\n')
    got = expand(source(stores, use_csv_no_sup_value=True, csv_no_sup_value="#NS#").read())
    assert [(c.values, c.unchanged) for c in got] == [
        (("1", None, None), frozenset({"name"})),
        (("2", "#NS#", None), frozenset({"note"})),
        (("3", "three", None), frozenset()),
    ]


def test_quoted_fields_keep_commas_quotes_and_newlines(stores: tuple[ObjectStore, ObjectStore]) -> None:
    text = 'I,1,"a, b","line one\nline two"\nU,1,"he said ""no""","crlf\r\ninside"\nD,1,"",x\n'
    put(stores[0], T, CDC1, text)
    assert rows(expand(source(stores).read())) == [
        ("I", ("1", "a, b", "line one\nline two")),
        ("U", ("1", 'he said "no"', "crlf\r\ninside")),
        ("D", ("1", "", "x")),
    ]


def test_timestamp_column_after_op_becomes_utc_commit_time(local: tuple[ObjectStore, ObjectStore]) -> None:
    put(local[0], T, "LOAD00000001.csv", "I,2014-10-29 11:30:00.000000,1,one,NULL\n")
    put(local[0], T, CDC1, "U,2014-10-29 11:34:01.123456,1,uno,NULL\nD,NULL,1,uno,NULL\n")
    got = expand(source(local, timestamp_column_name="ts", include_op_for_full_load=True).read())
    assert rows(got) == [("I", ("1", "one", None)), ("U", ("1", "uno", None)), ("D", ("1", "uno", None))]
    assert [c.commit_time for c in got] == [
        datetime(2014, 10, 29, 11, 30, tzinfo=UTC),
        datetime(2014, 10, 29, 11, 34, 1, 123456, tzinfo=UTC),
        None,
    ]


def test_header_rows_map_columns_by_name_and_new_columns_become_a_schema_change(
    local: tuple[ObjectStore, ObjectStore],
) -> None:
    put(local[0], T, "LOAD00000001.csv", "ts,id,name,note\n2014-10-29 11:30:00.000000,1,one,NULL\n")
    put(local[0], T, CDC1, "Op,ts,id,note,name\nU,2014-10-29 11:34:01.000000,1,NULL,uno\n")
    put(local[0], T, CDC2, "Op,ts,id,nombre,note\nU,2014-10-29 11:35:01.000000,1,x,NULL\n")
    put(local[0], T, CDC3, "Op,ts,note,name\nU,2014-10-29 11:36:01.000000,x,y\n")  # no key column
    got = expand(source(local, timestamp_column_name="ts", add_column_name=True).read())
    assert rows(got) == [("I", ("1", "one", None)), ("U", ("1", "uno", None)), ("U", ("1", None, None, "x"))]
    assert got[0].position.value == "1/LOAD00000001.csv 0000000001"
    [change] = [c for c in got if isinstance(c, SchemaChange)]
    assert change.schema.column_names == ("id", "name", "note", "nombre")
    assert change.position < got[-1].position
    [note] = notes(local)
    assert note["reason"] == "bad_header" and "primary key" in str(note["detail"])


def test_gzip_files_are_read(stores: tuple[ObjectStore, ObjectStore]) -> None:
    put(stores[0], T, CDC1 + ".gz", gzip.compress(b"I,1,one,NULL\n"))
    assert rows(expand(source(stores).read())) == [("I", ("1", "one", None))]


# -- bad input -------------------------------------------------------------------------------------------


BAD_FILE = (
    b"I,1,one,NULL\n"
    b"I,2,too,few\xff,fields,here\n"  # row 2: column count (also bad UTF-8: reported as such)
    b"I,3,three\n"  # row 3: column count
    b"X,4,four,NULL\n"  # row 4: unknown op
    b"I,5,caf\xe9,NULL\n"  # row 5: Latin-1, not UTF-8
    b'I,6,"bad"quote,NULL\n'  # row 6: unparseable CSV
    b"I,7,seven,NULL\n"
)


def test_each_kind_of_bad_row_is_quarantined_with_its_reason_and_the_rest_goes_on(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    put(stores[0], T, CDC1, BAD_FILE)
    put(stores[0], U, CDC1, "I,10,1.50\n")
    src = source(stores)
    got = expand(src.read())
    assert rows(got) == [("I", ("1", "one", None)), ("I", ("7", "seven", None))]
    assert [c.position.value for c in got if c.table == T] == [f"2/{CDC1} 0000000001", f"2/{CDC1} 0000000007"]
    assert rows(got, U) == [("I", ("10", "1.50"))]
    by_row = {n["row"]: n for n in notes(stores)}
    assert {r: n["reason"] for r, n in by_row.items()} == {
        2: "invalid_utf8",
        3: "column_count",
        4: "unknown_op",
        5: "invalid_utf8",
        6: "csv_syntax",
    }
    assert all("dbo.t" in str(n["detail"]) and CDC1 in str(n["detail"]) for n in by_row.values())
    assert "row 3: expected 4 fields" in str(by_row[3]["detail"])
    data_key = str(by_row[5]["data_key"])
    assert stores[1].get(data_key) == b"I,5,caf\xe9,NULL"  # the original bytes (no row delimiter)
    # Acking the last good row consumes the file: the bad rows stay in quarantine, not in the way.
    src.ack({T: got[1].position})
    assert state_doc(stores)["done"] == [f"2/{CDC1}"] and state_doc(stores)["partial"] is None


def test_an_unterminated_quote_quarantines_the_rest_of_the_file_only(
    local: tuple[ObjectStore, ObjectStore],
) -> None:
    put(local[0], T, CDC1, 'I,1,one,NULL\nI,2,"never closed,NULL\nI,3,three,NULL\n')
    put(local[0], T, CDC2, "I,4,four,NULL\n")
    assert rows(expand(source(local).read())) == [("I", ("1", "one", None)), ("I", ("4", "four", None))]
    [note] = notes(local)
    assert note["reason"] == "csv_syntax" and note["row"] == 2


def test_a_corrupt_gzip_file_is_quarantined_and_the_next_file_is_read(
    local: tuple[ObjectStore, ObjectStore],
) -> None:
    put(local[0], T, CDC1 + ".gz", b"\x1f\x8b\x08\x00not gzip at all")
    put(local[0], T, CDC2, "I,4,four,NULL\n")
    assert rows(expand(source(local).read())) == [("I", ("4", "four", None))]
    assert [n["reason"] for n in notes(local)] == ["bad_compression"]


def _positions(changes: Iterator[Change]) -> list[str]:
    return [c.position.value for c in changes]


def test_bad_rows_read_again_after_a_restart_leave_one_note_each(
    local: tuple[ObjectStore, ObjectStore],
) -> None:
    put(local[0], T, CDC1, BAD_FILE)
    src = source(local)
    got = expand(src.read())
    src.ack({T: got[0].position})
    assert _positions(iter(expand(source(local).read()))) == [f"2/{CDC1} 0000000007"]
    assert len(notes(local)) == 5
    assert got[0].op is Op.INSERT


# -- S3 event hints --------------------------------------------------------------------------------------


def test_s3_event_notifications_through_sqs_are_a_hint_and_listing_stays_the_truth(
    s3_settings: S3Settings, s3_bucket: str
) -> None:
    import boto3

    sqs = boto3.client("sqs", endpoint_url=s3_settings.endpoint_url, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"q-{s3_bucket}")["QueueUrl"]
    stores = (S3Store(s3_bucket, "dms-out", s3_settings), S3Store(s3_bucket, "staging", s3_settings))
    src = source(stores, sqs_queue_url=url, sqs_client=sqs)
    assert src.events is not None
    event = {"Records": [{"s3": {"object": {"key": f"dms-out/dbo/t/{CDC1}"}}}]}
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
    sqs.send_message(QueueUrl=url, MessageBody="not an S3 event")
    assert src.events.wait(1) == {f"dms-out/dbo/t/{CDC1}"}
    assert src.events.wait(0) == set()  # consumed; a duplicate or lost hint changes nothing below
    put(stores[0], T, CDC1, "I,1,one,NULL\n")  # a file no event announced is still read: listing decides
    assert rows(expand(src.read())) == [("I", ("1", "one", None))]
