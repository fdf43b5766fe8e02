"""A batch that mixes chunks with changes the stage must resolve counts its chunks at what staging them
costs (issue 13, point 8).

Such a batch is staged row by row: each chunk row becomes a ``Change`` (its values copied into Python
strings), then the rows become Arrow text again, beside the chunk's own buffers. At the turn from full-row
updates (chunks) to updates that leave a TOASTed value unsent (changes) of a load of 300 kB-1 MB values,
such batches held ~230 MB of Arrow memory at once for a 64 MB limit.
"""

from __future__ import annotations

import tracemalloc

import pyarrow as pa

from replicator.buffer import Buffer, ChunkedChanges
from replicator.model import (
    COMMIT_TIME_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    Batch,
    Change,
    ChangeChunk,
    Column,
    Op,
    Position,
    TableId,
    TableSchema,
)
from replicator.stage import batch_to_arrow

T = TableId("public", "big")
SCHEMA = TableSchema(
    T,
    (Column.of("id", "bigint", nullable=False), Column.of("body", "text"), Column.of("note", "text")),
    ("id",),
)
MB = 1 << 20


def chunk(first: int, size: int) -> ChangeChunk:
    data = pa.Table.from_arrays(
        [
            pa.array([str(first)]),
            pa.array(["x" * size]),
            pa.array(["n"]),
            pa.array(["U"]),
            pa.array([f"{first:08d}"]),
            pa.nulls(1, pa.timestamp("us", tz="UTC")),
        ],
        names=[*SCHEMA.column_names, OP_COLUMN, POSITION_COLUMN, COMMIT_TIME_COLUMN],
    )
    return ChangeChunk(T, SCHEMA, data)


def unsent(i: int) -> Change:
    """An update of row ``i`` that leaves its (TOASTed) body unsent."""
    return Change(T, Op.UPDATE, (str(i), None, "m"), Position(f"{i:08d}"), unchanged=frozenset({"body"}))


def positions(batch: Batch) -> list[str]:
    return [c.position.value for c in batch.changes]


def test_chunks_count_three_times_once_the_batch_is_staged_row_by_row() -> None:
    buf = Buffer({T: SCHEMA}, max_rows=1000, max_bytes=4 * MB, max_age_seconds=60)
    assert buf.add_chunk(chunk(1, MB)) == []
    assert buf.add(unsent(2)) == []  # 1 MB of chunk now counts 3 MB: it still fits
    [full] = buf.add_chunk(chunk(3, MB))  # 3 MB more would not: the batch so far is cut first
    assert positions(full) == ["00000001", "00000002"]
    [rest] = buf.drain()
    assert positions(rest) == ["00000003"]
    # Chunks alone (staged column-wise, from their own buffers) count once: four of 1 MB fit 4 MB.
    buf = Buffer({T: SCHEMA}, max_rows=1000, max_bytes=4 * MB + 4096, max_age_seconds=60)
    for i in range(1, 5):
        assert buf.add_chunk(chunk(i, MB)) == []
    # A change to resolve after them would make them count 12 MB: it starts the next batch.
    [columnar] = buf.add(unsent(5))
    assert len(columnar.changes) == 4
    # Changes first, then a chunk: the chunk counts three times from the start.
    buf = Buffer({T: SCHEMA}, max_rows=1000, max_bytes=2 * MB, max_age_seconds=60)
    assert buf.add(unsent(1)) == []
    [alone] = buf.add_chunk(chunk(2, MB))
    assert positions(alone) == ["00000001"]


def test_staging_a_mixed_batch_copies_its_chunks_values_twice_more() -> None:
    """What the factor of three stands for, measured: the chunk's values in Python strings and again in
    Arrow, beside the chunk itself. (Should staging ever keep chunk rows columnar in a mixed batch, this
    fails: the buffer's ``_ROWWISE_CHUNK`` can then go down.)"""
    size = 4 * MB
    batch = Batch(T, SCHEMA, ChunkedChanges([chunk(1, size), unsent(2)]))
    arrow_before = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        table, rejected = batch_to_arrow(batch)
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not rejected and table.num_rows == 2
    assert python_peak >= size  # the chunk row's body as a Python string
    assert pa.total_allocated_bytes() - arrow_before >= size  # and in Arrow again: not the chunk's buffers
    assert table.column("body").to_pylist() == ["x" * size, None]


def full(i: int, size: int) -> Change:
    return Change(T, Op.UPDATE, (str(i), "x" * size, "n"), Position(f"{i:08d}"))


def test_a_change_filled_from_an_earlier_change_of_its_key_counts_the_value_again() -> None:
    buf = Buffer({T: SCHEMA}, max_rows=1000, max_bytes=4 * MB, max_age_seconds=60)
    big = full(1, MB)
    assert buf.add(big) == []
    later = Change(T, Op.UPDATE, ("1", None, "m"), Position("00000002"), unchanged=frozenset({"body"}))
    assert buf.add(later) == []  # filled with row 1's body: 2 MB so far
    again = Change(T, Op.UPDATE, ("1", None, "o"), Position("00000003"), unchanged=frozenset({"body"}))
    assert buf.add(again) == []  # the same key again: only its last row keeps the value (still 2 MB)
    assert buf.add(full(4, MB)) == []  # 3 MB
    filled = Change(T, Op.UPDATE, ("4", None, "m"), Position("00000005"), unchanged=frozenset({"body"}))
    [batch] = buf.add(filled)  # 4 MB with it: the batch so far is cut
    assert positions(batch) == ["00000001", "00000002", "00000003", "00000004"]
    # What the count stands for: the filled row's body is in the staged table again.
    arrow_before = pa.total_allocated_bytes()
    table, _ = batch_to_arrow(Batch(T, SCHEMA, [big, later]))
    assert pa.total_allocated_bytes() - arrow_before >= 2 * MB
    assert table.column("body").to_pylist() == ["x" * MB] * 2


def test_a_delete_ends_what_its_key_can_be_filled_with() -> None:
    buf = Buffer({T: SCHEMA}, max_rows=1000, max_bytes=3 * MB // 2, max_age_seconds=60)
    assert buf.add(full(1, MB)) == []
    assert buf.add(Change(T, Op.DELETE, ("1", None, None), Position("00000002"))) == []
    assert buf.add(Change(T, Op.INSERT, ("1", "y", "n"), Position("00000003"))) == []
    update = Change(T, Op.UPDATE, ("1", None, "m"), Position("00000004"), unchanged=frozenset({"body"}))
    assert buf.add(update) == []  # filled from the small insert, not the deleted 1 MB row
    assert len(buf.drain()[0].changes) == 4
