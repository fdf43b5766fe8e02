"""Columnar changes: chunks through buffer and stage; the DMS CSV fast path against the row path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replicator.buffer import Buffer, ChunkedChanges
from replicator.model import (
    COMMIT_TIME_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    SEQ_COLUMN,
    Batch,
    Change,
    ChangeChunk,
    Column,
    Op,
    Position,
    TableId,
    TableSchema,
)
from replicator.sources.dms.arrow import decode_csv_columnar
from replicator.sources.dms.csvfiles import CsvLayout, decode_csv
from replicator.stage import BatchRejected, Stager, batch_to_arrow
from replicator.storage import LocalStore, Quarantine

T = TableId("dbo", "t")
SCHEMA = TableSchema(
    T,
    (Column.of("id", "bigint", nullable=False), Column.of("name", "text"), Column.of("n", "integer")),
    ("id",),
)
WHEN = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def row(pos: int, values: tuple[str | None, ...] = ("1", "a", "1"), op: Op = Op.INSERT) -> Change:
    return Change(T, op, values, Position(f"{pos:08d}"), WHEN if pos % 2 else None)


def chunk(*changes: Change) -> ChangeChunk:
    cols = list(zip(*(c.values for c in changes), strict=True))
    data = pa.table(
        {
            **{c.name: pa.array(v, pa.string()) for c, v in zip(SCHEMA.columns, cols, strict=True)},
            OP_COLUMN: [c.op.value for c in changes],
            POSITION_COLUMN: [c.position.value for c in changes],
            COMMIT_TIME_COLUMN: pa.array([c.commit_time for c in changes], pa.timestamp("us", tz="UTC")),
        }
    )
    return ChangeChunk(T, SCHEMA, data)


def test_a_chunk_stands_for_exactly_its_changes() -> None:
    changes = [row(1), row(2, ("2", None, "7"), Op.UPDATE), row(3, ("3", "c", None), Op.DELETE)]
    assert list(chunk(*changes).changes()) == changes


def test_the_buffer_drops_seen_rows_of_a_chunk_and_slices_it_into_batches() -> None:
    buf = Buffer(
        {T: SCHEMA}, max_rows=2, max_bytes=10**9, max_age_seconds=60, seen_through={T: Position("00000002")}
    )
    batches = buf.add_chunk(chunk(*(row(i, (str(i), "x", "1")) for i in range(1, 7))))
    assert buf.dropped == 2 and buf.dropped_through == Position("00000002")
    assert [[c.position.value for c in b.changes] for b in batches] == [
        ["00000003", "00000004"],
        ["00000005", "00000006"],
    ]
    assert buf.add(row(4)) == [] and buf.dropped == 3  # a row already taken from a chunk is dropped too


def test_the_buffer_cuts_a_chunk_on_bytes() -> None:
    buf = Buffer({T: SCHEMA}, max_rows=10**6, max_bytes=500, max_age_seconds=60)
    batches = buf.add_chunk(chunk(*(row(i, (str(i), "x" * 40, "1")) for i in range(1, 41))))
    assert len(batches) > 1 and sum(len(b.changes) for b in batches) + buf.pending_rows() == 40


def test_a_rewound_batch_is_taken_again_when_the_source_yields_it_again() -> None:
    buf = Buffer({T: SCHEMA}, max_rows=2, max_bytes=10**9, max_age_seconds=60)
    [first] = buf.add_chunk(chunk(row(1), row(2)))
    [second] = buf.add_chunk(chunk(row(3), row(4)))
    buf.rewind(second)
    assert buf.seen_through[T] == Position("00000002")
    [again] = buf.add_chunk(chunk(row(3), row(4)))
    assert again.id == second.id != first.id


def test_a_mixed_batch_of_rows_and_chunks_stages_as_its_changes_one_by_one() -> None:
    changes = [row(i, (str(i), f"v{i}", str(i * 10)), Op.UPDATE if i % 3 else Op.INSERT) for i in range(1, 9)]
    mixed = ChunkedChanges([changes[0], chunk(*changes[1:4]), changes[4], changes[5], chunk(*changes[6:])])
    assert list(mixed) == changes and mixed[5] == changes[5] and mixed[-1] == changes[-1]
    columnar, rejected = batch_to_arrow(Batch(T, SCHEMA, mixed))
    by_rows, _ = batch_to_arrow(Batch(T, SCHEMA, changes))
    assert rejected == [] and columnar.equals(by_rows)
    assert columnar.column(SEQ_COLUMN).to_pylist() == list(range(8))


def test_a_bad_value_inside_a_chunk_is_quarantined_and_the_rest_staged(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    q = Quarantine(store)
    changes = [row(1), row(2, ("2", "b", "two")), row(3, ("3", "c", "3")), row(4, ("x", "d", "4"))]
    m = Stager(store, q).stage(Batch(T, SCHEMA, ChunkedChanges([chunk(*changes[:3]), changes[3]])))
    assert (
        m.rows == 2 and m.inserts == 2 and m.first == Position("00000001") and m.last == Position("00000004")
    )
    assert m.min_commit_time == WHEN == m.max_commit_time
    assert pq.read_table(tmp_path / m.data_key).column("id").to_pylist() == [1, 3]
    assert sorted((n["row"], n["reason"]) for n in q.entries()) == [
        (1, "type_mismatch"),
        (3, "type_mismatch"),
    ]


def test_a_bad_value_the_caller_will_not_keep_stages_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "st")
    batch = Batch(T, SCHEMA, ChunkedChanges([chunk(row(1), row(2, ("2", "b", "two")), row(3))]))
    with pytest.raises(BatchRejected) as caught:
        Stager(store, Quarantine(store)).stage(batch, keep=lambda r: False)
    assert caught.value.row.position == Position("00000002")
    assert [i.key for i in store.list("batches/")] == []
    assert len(Quarantine(store).items()) == 1


LAYOUT = CsvLayout(T, SCHEMA)
FILES = {
    "plain": b"I,1,a,1\nU,2,b,2\nD,3,NULL,3\n",
    "quoted": b'I,1,"a,b",1\nI,2,"say ""hi""",2\nI,3,"NULL",NULL\nI,4,"line\nbreak",4\nI,5,"",5',
    "carriage return": b"I,1,a\r,1\nI,2,b,2\n",
    "stray quote": b'I,1,a,1\nI,2,"b"x,2\nI,3,c,3\n',
    "quote inside a field": b'I,1,a"b,1\nI,2,b,2\n',
    "wrong column count": b"I,1,a,1\nI,2,b\nI,3,c,3\n",
    "unknown op": b"I,1,a,1\nX,2,b,2\nI,3,c,3\n",
    "not utf-8": b"I,1,a,1\nI,2,caf\xe9,2\nI,3,c,3\n",
    "empty line": b"I,1,a,1\n\nI,3,c,3\n",
    "byte order mark": b"\xef\xbb\xbfI,1,a,1\n",
}


@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("skip", [0, 1])
def test_the_csv_fast_path_yields_what_the_row_decoder_yields(tmp_path: Path, name: str, skip: int) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(FILES[name])
    kw = {"position_prefix": "2/f.csv ", "has_op": True, "skip": skip}
    expected = list(decode_csv(path.open("rb"), LAYOUT, **kw))  # type: ignore[arg-type]
    got: list[object] = []
    for item in decode_csv_columnar(lambda: path.open("rb"), LAYOUT, **kw):  # type: ignore[arg-type]
        got.extend(item.changes() if isinstance(item, ChangeChunk) else [item])
    assert got == expected


def test_the_csv_fast_path_reads_plain_files_as_chunks(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(FILES["quoted"])
    items = list(decode_csv_columnar(lambda: path.open("rb"), LAYOUT, position_prefix="p ", has_op=True))
    [only] = items
    assert isinstance(only, ChangeChunk) and len(only) == 5
