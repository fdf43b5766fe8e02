from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq

from replicator.buffer import Buffer
from replicator.model import Batch, Change, Column, Op, Position, TableId, TableSchema
from replicator.stage import Stager, batch_to_arrow, decode_manifest
from replicator.storage import LocalStore, Quarantine
from replicator.values import parse_type

T = TableId("dbo", "t")
SCHEMA = TableSchema(
    T,
    (
        Column("id", parse_type("bigint"), False),
        Column("name", parse_type("text")),
        Column("n", parse_type("integer")),
    ),
    ("id",),
)
U = TableId("dbo", "u")


def ch(
    pos: int,
    op: Op = Op.INSERT,
    values: tuple[str | None, ...] = ("1", "a", "1"),
    table: TableId = T,
    **kw: object,
) -> Change:
    return Change(table, op, values, Position(f"{pos:08d}"), **kw)  # type: ignore[arg-type]


def test_buffer_cuts_on_rows_and_keeps_tables_apart() -> None:
    buf = Buffer({T: SCHEMA, U: SCHEMA}, max_rows=3, max_bytes=10**9, max_age_seconds=60)
    assert buf.add(ch(1)) == []
    assert buf.add(ch(2, table=U)) == []
    assert buf.add(ch(3)) == []
    (batch,) = buf.add(ch(4))
    assert batch.table == T
    assert [c.position.value for c in batch.changes] == ["00000001", "00000003", "00000004"]
    rest = buf.drain()
    assert [(b.table, len(b.changes)) for b in rest] == [(U, 1)]


def test_buffer_cuts_on_bytes_and_age() -> None:
    now = [0.0]
    buf = Buffer({T: SCHEMA}, max_rows=1000, max_bytes=200, max_age_seconds=5, clock=lambda: now[0])
    big = ("1", "x" * 300, "1")
    assert len(buf.add(ch(1, values=big))) == 1
    buf.add(ch(2))
    assert buf.due() == []
    now[0] = 5.0
    (due,) = buf.due()
    assert len(due.changes) == 1


def test_buffer_drops_changes_already_staged_after_a_restart() -> None:
    buf = Buffer(
        {T: SCHEMA}, max_rows=10, max_bytes=10**9, max_age_seconds=60, seen_through={T: Position("00000005")}
    )
    for p in range(1, 8):
        buf.add(ch(p))
    (batch,) = buf.drain()
    assert [c.position.value for c in batch.changes] == ["00000006", "00000007"]
    assert buf.dropped == 5


def test_batch_id_is_deterministic_for_the_same_range() -> None:
    a = Batch(T, SCHEMA, [ch(1), ch(2)])
    b = Batch(T, SCHEMA, [ch(1), ch(2)])
    c = Batch(T, SCHEMA, [ch(1), ch(3)])
    assert a.id == b.id != c.id


def test_staged_file_has_typed_columns_metadata_and_a_manifest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    stager = Stager(store, Quarantine(store))
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    batch = Batch(T, SCHEMA, [ch(1, commit_time=when), ch(2, Op.UPDATE, ("1", None, "2")), ch(3, Op.DELETE)])
    m = stager.stage(batch)
    table = pq.read_table(tmp_path / m.data_key)
    assert table.column_names == ["id", "name", "n", "_op", "_seq", "_pos", "_commit_time", "_unchanged"]
    assert table.column("id").to_pylist() == [1, 1, 1]
    assert table.column("name").to_pylist() == ["a", None, "a"]
    assert table.column("_op").to_pylist() == ["I", "U", "D"]
    assert table.column("_seq").to_pylist() == [0, 1, 2]
    assert table.column("_commit_time").to_pylist()[0] == when
    assert pq.ParquetFile(tmp_path / m.data_key).metadata.row_group(0).column(0).compression == "ZSTD"
    assert (m.inserts, m.updates, m.deletes, m.rows) == (1, 1, 1, 3)
    listed = list(stager.pending(T))
    assert listed == [m]
    assert decode_manifest(store.get(m.data_key.removesuffix(".parquet") + ".json")) == m


def test_pending_batches_list_oldest_first_even_when_positions_share_a_prefix(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    stager = Stager(store, Quarantine(store))
    # "ab" < "ab0" < "ab~" < "b" as positions; the listing must follow that order.
    for pos in ["ab~", "b", "ab", "ab0"]:
        stager.stage(Batch(T, SCHEMA, [Change(T, Op.INSERT, ("1", "a", "1"), Position(pos))]))
    assert [m.first.value for m in stager.pending(T)] == ["ab", "ab0", "ab~", "b"]


def test_a_batch_merged_while_pending_lists_is_skipped_not_raised(tmp_path: Path) -> None:
    """``status`` and ``GET /tables`` count pending batches while the merge thread removes applied ones: a
    manifest listed but gone when read was applied, not pending (it raised KeyError into the request, and
    the HTTP server closed the connection without an answer)."""
    store = LocalStore(tmp_path)
    stager = Stager(store, Quarantine(store))
    for pos in range(3):
        stager.stage(Batch(T, SCHEMA, [ch(pos)]))
    listing = stager.pending(T)
    first = next(listing)
    second = sorted(stager.pending(T), key=lambda m: m.first.value)[1]
    stager.remove(second)  # merged meanwhile
    assert [m.first.value for m in [first, *listing]] == ["00000000", "00000002"]


def test_a_value_that_does_not_parse_is_quarantined_and_the_rest_staged(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    q = Quarantine(store)
    stager = Stager(store, q)
    m = stager.stage(
        Batch(T, SCHEMA, [ch(1), ch(2, values=("2", "b", "two")), ch(3, values=("3", "c", "3"))])
    )
    assert m.rows == 2
    assert pq.read_table(tmp_path / m.data_key).column("id").to_pylist() == [1, 3]
    (item,) = q.items()
    assert item["reason"] == "type_mismatch"
    assert "column n" in str(item["detail"]) and "'two'" in str(item["detail"])
    (row,) = q.entries()
    assert row["data"] == {"op": "I", "values": ["2", "b", "two"]}
    assert row["row"] == 1 and item["rows"] == 1


def test_unchanged_columns_take_the_value_of_an_earlier_change_of_the_same_key() -> None:
    keep = frozenset({"name"})
    batch = Batch(
        T,
        SCHEMA,
        [
            ch(1, Op.INSERT, ("1", "big toast", "1")),
            ch(2, Op.UPDATE, ("1", None, "2"), unchanged=keep),  # name not sent: it is still "big toast"
            ch(
                3, Op.UPDATE, ("9", None, "3"), unchanged=keep
            ),  # key 9 not in this batch: keep target's value
        ],
    )
    table, rejected = batch_to_arrow(batch)
    assert rejected == []
    assert table.column("name").to_pylist() == ["big toast", "big toast", None]
    assert table.column("_unchanged").to_pylist() == [None, None, ["name"]]


def test_a_truncate_is_a_batch_of_its_own_between_its_neighbours() -> None:
    buf = Buffer({T: SCHEMA}, max_rows=100, max_bytes=10**9, max_age_seconds=60)
    buf.add(ch(1))
    buf.add(ch(2))
    before, trunc = buf.add(Change(T, Op.TRUNCATE, (), Position("00000003")))
    buf.add(ch(4))
    (after,) = buf.drain()
    assert [c.position.value for c in before.changes] == ["00000001", "00000002"]
    assert [c.op for c in trunc.changes] == [Op.TRUNCATE]
    assert [c.position.value for c in after.changes] == ["00000004"]


def test_a_schema_change_cuts_the_batch_so_each_batch_has_one_shape() -> None:
    from replicator.model import SchemaChange

    buf = Buffer({T: SCHEMA}, max_rows=100, max_bytes=10**9, max_age_seconds=60)
    buf.add(ch(1))
    wider = TableSchema(T, (*SCHEMA.columns, Column("extra", parse_type("text"))), ("id",))
    (old,) = buf.set_schema(SchemaChange(T, wider, Position("00000002")))
    buf.add(ch(3, values=("1", "a", "1", "x")))
    (new,) = buf.drain()
    assert old.schema == SCHEMA and new.schema == wider


def test_a_manifest_describes_the_shape_it_was_staged_with(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    m = Stager(store, Quarantine(store)).stage(Batch(T, SCHEMA, [ch(1)]))
    assert m.schema().column_names == SCHEMA.column_names
    assert [str(c.type) for c in m.schema().columns] == ["bigint", "text", "integer"]
    assert m.schema().primary_key == ("id",)


def test_staged_data_without_a_manifest_is_removed_and_staged_batches_are_kept(tmp_path: Path) -> None:
    """A crash between removing an applied batch's manifest and its data leaves the data file behind."""
    store = LocalStore(tmp_path)
    stager = Stager(store, Quarantine(store))
    kept = stager.stage(Batch(T, SCHEMA, [ch(1)]))
    gone = stager.stage(Batch(T, SCHEMA, [ch(2)]))
    store.delete(gone.data_key.removesuffix(".parquet") + ".json")  # as Stager.remove does first
    assert stager.remove_orphans() == 1
    assert [m.batch_id for m in stager.pending(T)] == [kept.batch_id]
    assert sorted(i.key for i in store.list("batches/") if i.key.endswith(".parquet")) == [kept.data_key]
