"""PreserveTransactions feeds (``CdcPath/CDC_TXN-*.csv``) on a local folder and the moto S3 server: resume
after a restart per table, and the operator's decision when a row or the feed itself is bad."""

from __future__ import annotations

import json
from typing import Any

import pytest

from replicator.model import Change, Column, Position, TableId, TableSchema
from replicator.sources.dms.source import DmsOptions, DmsSource
from replicator.storage import ObjectStore, Quarantine
from tests.helpers.dms_chunks import expand

T = TableId("dbo", "t")
U = TableId("sales", "orders")
SCHEMAS = {
    T: TableSchema(T, (Column.of("id", "bigint"), Column.of("name", "text")), ("id",)),
    U: TableSchema(U, (Column.of("order_id", "bigint"), Column.of("amount", "numeric(12,2)")), ("order_id",)),
}
TXN1, TXN2 = "cdc/CDC_TXN-20240101-0000000000-00001.csv", "cdc/CDC_TXN-20240101-0100000000-00002.csv"
# Commit order across both tables; each file ends with a row of T, so U's last row is mid-file.
FILE1 = "I,t,dbo,1,one\nI,orders,sales,10,1.50\nU,t,dbo,1,uno\n"
FILE2 = "I,orders,sales,11,2.50\nI,t,dbo,2,two\nD,t,dbo,1,uno\n"


def source(stores: tuple[ObjectStore, ObjectStore], **options: Any) -> DmsSource:
    data, state = stores
    opts = DmsOptions(preserve_transactions=True, cdc_path="cdc", **options)
    return DmsSource(data, SCHEMAS, state=state, quarantine=Quarantine(state), options=opts)


def feed(store: ObjectStore) -> None:
    store.put(TXN2, FILE2.encode())  # written first: name order decides
    store.put(TXN1, FILE1.encode())


def rows(changes: list[Change]) -> list[tuple[str, str, tuple[str | None, ...], str]]:
    """(table, op, values, position) in the order read."""
    return [(str(c.table), c.op.value, c.values, c.position.value) for c in changes]


def last(changes: list[Change], table: TableId) -> Change:
    return [c for c in changes if c.table == table][-1]


ALL = [
    ("dbo.t", "I", ("1", "one"), "2/CDC_TXN-20240101-0000000000-00001.csv 0000000001"),
    ("sales.orders", "I", ("10", "1.50"), "2/CDC_TXN-20240101-0000000000-00001.csv 0000000002"),
    ("dbo.t", "U", ("1", "uno"), "2/CDC_TXN-20240101-0000000000-00001.csv 0000000003"),
    ("sales.orders", "I", ("11", "2.50"), "2/CDC_TXN-20240101-0100000000-00002.csv 0000000001"),
    ("dbo.t", "I", ("2", "two"), "2/CDC_TXN-20240101-0100000000-00002.csv 0000000002"),
    ("dbo.t", "D", ("1", "uno"), "2/CDC_TXN-20240101-0100000000-00002.csv 0000000003"),
]


def txn_doc(stores: tuple[ObjectStore, ObjectStore]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(stores[1].get("_state/dms/_txn.json"))
    return doc


# -- resume ----------------------------------------------------------------------------------------------


def test_all_tables_come_in_commit_order_across_files(stores: tuple[ObjectStore, ObjectStore]) -> None:
    feed(stores[0])
    assert rows(expand(source(stores).read())) == ALL


def test_restart_without_any_ack_yields_every_row_again(stores: tuple[ObjectStore, ObjectStore]) -> None:
    feed(stores[0])
    first = source(stores)
    assert rows(expand(first.read())) == ALL
    assert expand(first.read()) == []  # already handed out by this process
    assert rows(expand(source(stores).read())) == ALL


def test_restart_after_acks_mid_file_resumes_each_table_after_its_own_row(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    feed(stores[0])
    first = source(stores)
    got = expand(first.read())
    # T acked its first row only; U acked through its row in the first file.
    first.ack({T: got[0].position, U: got[1].position})
    with pytest.raises(KeyError):
        txn_doc(stores)  # T has not acked the first file's end: nothing is consumed
    assert rows(expand(source(stores).read())) == [ALL[2], *ALL[3:]]


def test_restart_after_acks_at_a_file_end_consumes_the_file_and_reads_only_the_next(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    feed(stores[0])
    first = source(stores)
    got = expand(first.read())
    first.ack({T: got[2].position, U: got[1].position})  # each table's last row of the first file
    assert txn_doc(stores)["done"] == ["CDC_TXN-20240101-0000000000-00001.csv"]
    second = source(stores)
    assert rows(expand(second.read())) == ALL[3:]
    acks = expand(second.read())
    assert acks == []
    second.ack({T: Position(ALL[5][3]), U: Position(ALL[3][3])})
    assert txn_doc(stores)["done"] == [
        "CDC_TXN-20240101-0000000000-00001.csv",
        "CDC_TXN-20240101-0100000000-00002.csv",
    ]
    assert expand(source(stores).read()) == []


# -- bad input and the operator's decision ---------------------------------------------------------------

BAD_T = "I,t,dbo,1,one\nI,orders,sales,10,1.50\nX,t,dbo,9,nine\nU,t,dbo,1,uno\n"  # X: unknown op
FIXED_T = "I,t,dbo,1,one\nI,orders,sales,10,1.50\nI,t,dbo,9,nine\nU,t,dbo,1,uno\n"


def test_a_bad_row_stops_only_its_table_and_a_restart_keeps_it_stopped(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    stores[0].put(TXN1, BAD_T.encode())
    stores[0].put(TXN2, FILE2.encode())
    src = source(stores)
    got = expand(src.read())
    assert rows(got) == [ALL[0], ALL[1], ALL[3]]  # U flows on; nothing of T after the bad row
    [problem] = src.problems()
    assert (problem["table"], problem["reason"], problem["row"]) == ("dbo.t", "unknown_op", 3)
    [note] = Quarantine(stores[1]).items()
    assert (note["reason"], note["row"], note["table"]) == ("unknown_op", 3, "dbo.t")
    src.ack({T: got[0].position, U: got[2].position})
    again = source(stores)
    assert expand(again.read()) == []
    assert [p["reason"] for p in again.problems()] == ["unknown_op"]


def test_retry_after_the_file_is_fixed_reads_the_table_from_its_bad_row_and_nothing_twice(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    stores[0].put(TXN1, BAD_T.encode())
    stores[0].put(TXN2, FILE2.encode())
    src = source(stores)
    got = expand(src.read())
    src.ack({T: got[0].position, U: got[2].position})
    stores[0].put(TXN1, FIXED_T.encode())
    src.resume(T, "retry")
    after = expand(src.read())
    assert src.problems() == []
    pos1 = "2/CDC_TXN-20240101-0000000000-00001.csv"
    assert rows(after) == [
        ("dbo.t", "I", ("9", "nine"), f"{pos1} 0000000003"),
        ("dbo.t", "U", ("1", "uno"), f"{pos1} 0000000004"),
        ALL[4],
        ALL[5],
    ]
    src.ack({T: after[-1].position})
    assert txn_doc(stores)["done"][-1] == "CDC_TXN-20240101-0100000000-00002.csv"


def test_skip_leaves_the_bad_row_in_the_quarantine_and_the_table_goes_on_after_a_restart(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    stores[0].put(TXN1, BAD_T.encode())
    stores[0].put(TXN2, FILE2.encode())
    src = source(stores)
    got = expand(src.read())
    src.ack({T: got[0].position, U: got[2].position})
    src.resume(T, "skip")
    restarted = source(stores)  # the decision is persisted
    after = expand(restarted.read())
    pos1 = "2/CDC_TXN-20240101-0000000000-00001.csv"
    assert rows(after) == [("dbo.t", "U", ("1", "uno"), f"{pos1} 0000000004"), ALL[4], ALL[5]]
    assert restarted.problems() == []
    assert len(Quarantine(stores[1]).items()) == 1


def test_with_the_quarantine_policy_a_bad_row_is_set_aside_and_its_table_goes_on(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    stores[0].put(TXN1, BAD_T.encode())
    stores[0].put(TXN2, FILE2.encode())
    src = source(stores, table_policies={T: "quarantine"})
    pos1 = "2/CDC_TXN-20240101-0000000000-00001.csv"
    assert rows(expand(src.read())) == [
        ALL[0], ALL[1], ("dbo.t", "U", ("1", "uno"), f"{pos1} 0000000004"), *ALL[3:]
    ]  # fmt: skip
    assert src.problems() == []


def test_a_row_naming_no_table_stops_the_feed_until_the_operator_skips_it(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    stores[0].put(TXN1, b"I,t,dbo,1,one\nI,t\nI,orders,sales,10,1.50\nU,t,dbo,1,uno\n")
    stores[0].put(TXN2, FILE2.encode())
    src = source(stores)
    got = expand(src.read())
    assert rows(got) == [ALL[0]]  # commit order: nothing of any table after the bad row
    [problem] = src.problems()
    assert (problem["table"], problem["reason"], problem["row"]) == ("*", "column_count", 2)
    src.ack({T: got[0].position})
    restarted = source(stores)
    assert expand(restarted.read()) == [] and restarted.problems()[0]["table"] == "*"
    restarted.resume(None, "skip")
    pos1 = "2/CDC_TXN-20240101-0000000000-00001.csv"
    assert rows(expand(restarted.read())) == [
        ("sales.orders", "I", ("10", "1.50"), f"{pos1} 0000000003"),
        ("dbo.t", "U", ("1", "uno"), f"{pos1} 0000000004"),
        *ALL[3:],
    ]
    assert restarted.problems() == []


def test_a_value_rejected_downstream_stops_its_table_and_retry_reads_it_again_from_the_ack(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    feed(stores[0])
    src = source(stores)
    got = expand(src.read())
    src.ack({T: got[0].position, U: got[1].position})
    # The stager found T's update in the first file unparseable (as Stager.stop_table reports it).
    assert src.stop_table(T, reason="bad_value", position=got[2].position, detail="not a bigint")
    assert [(p["table"], p["reason"], p["row"]) for p in src.problems()] == [("dbo.t", "bad_value", 3)]
    assert rows(expand(src.read())) == []  # T waits; U has nothing new
    src.resume(T, "retry")
    assert rows(expand(src.read())) == [ALL[2], ALL[4], ALL[5]]
    src.resume(T, "retry")  # not stopped: nothing happens
    assert src.stop_table(T, reason="bad_value", position=Position(ALL[4][3]), detail="x")
    src.resume(T, "skip")
    # The source hands the row out again; the stage asks and is told to set it aside this time.
    assert rows(expand(src.read())) == [ALL[2], ALL[4], ALL[5]]
    assert not src.stop_table(T, reason="bad_value", position=Position(ALL[4][3]), detail="x")
    src.ack({T: Position(ALL[5][3]), U: Position(ALL[3][3])})
    assert len(txn_doc(stores)["done"]) == 2


def test_the_no_sup_value_marks_a_column_unchanged_in_transaction_files(
    stores: tuple[ObjectStore, ObjectStore],
) -> None:
    stores[0].put(TXN1, b'U,t,dbo,1,-\nU,t,dbo,2,"-"\nU,orders,sales,10,-\n')
    got = expand(source(stores, use_csv_no_sup_value=True, csv_no_sup_value="-").read())
    assert [(c.values, c.unchanged) for c in got] == [
        (("1", None), frozenset({"name"})),
        (("2", "-"), frozenset()),
        (("10", None), frozenset({"amount"})),
    ]
