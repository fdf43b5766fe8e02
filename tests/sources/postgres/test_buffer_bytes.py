"""Byte limits count what each change holds: a few huge values among many small ones cut batches at
``max_bytes`` (in the buffer, in the PostgreSQL source's collected rows, and in what a re-copy holds back),
whatever their order. Sizes are checked here independently, from the values' lengths."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from replicator.buffer import Buffer
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
from replicator.schema import load_tables
from replicator.sources.postgres.initial_copy import Recopies
from replicator.sources.postgres.source import PostgresSource
from replicator.storage import LocalStore
from tests.helpers.pg import execute, slot_of, write_schemas

T = TableId("dbo", "t")
SCHEMA = TableSchema(T, (Column.of("id", "bigint", nullable=False), Column.of("body", "text")), ("id",))
MB = 1 << 20


def change(i: int, size: int) -> Change:
    return Change(T, Op.UPDATE, (str(i), "x" * size), Position(f"{i:08d}"))


def chunk(sizes: list[int], first: int = 1) -> ChangeChunk:
    ids = range(first, first + len(sizes))
    data = pa.Table.from_arrays(
        [
            pa.array([str(i) for i in ids], pa.string()),
            pa.array(["x" * s for s in sizes], pa.string()),
            pa.array(["U"] * len(sizes), pa.string()),
            pa.array([f"{i:08d}" for i in ids], pa.string()),
            pa.nulls(len(sizes), pa.timestamp("us", tz="UTC")),
        ],
        names=[*SCHEMA.column_names, OP_COLUMN, POSITION_COLUMN, COMMIT_TIME_COLUMN],
    )
    return ChangeChunk(T, SCHEMA, data)


def value_bytes(batch: Batch) -> int:
    return sum(len(v or "") for c in batch.changes for v in c.values)


def test_one_huge_change_in_64_is_counted_whatever_its_place_in_the_stream() -> None:
    """A byte count sampled on one change in 64 missed every huge one when they fell between samples: the
    batch grew to the row limit (here 20 MB for a 4 MB limit)."""
    for offset in (0, 1, 63):  # where the huge changes fall relative to a batch's first change
        buf = Buffer({T: SCHEMA}, max_rows=100_000, max_bytes=4 * MB, max_age_seconds=60)
        batches: list[Batch] = []
        for i in range(1, 64 * 20 + 1):
            batches += buf.add(change(i, MB if (i + offset) % 64 == 0 else 10))
        batches += buf.drain()
        assert sum(len(b.changes) for b in batches) == 64 * 20
        assert max(value_bytes(b) for b in batches) <= 4 * MB, offset
        assert len(batches) >= 5


def test_a_change_that_would_overflow_the_batch_starts_the_next_one() -> None:
    buf = Buffer({T: SCHEMA}, max_rows=100, max_bytes=MB, max_age_seconds=60)
    assert buf.add(change(1, 600_000)) == []
    [full] = buf.add(change(2, 600_000))  # 1.2 MB together: the first goes alone
    assert [c.position.value for c in full.changes] == ["00000001"]
    # Larger than the limit by itself: the pending one is cut first, then it goes alone.
    pending, alone = buf.add(change(3, 2 * MB))
    assert [c.position.value for c in pending.changes] == ["00000002"]
    assert [c.position.value for c in alone.changes] == ["00000003"] and buf.drain() == []


def test_a_chunk_holding_a_few_huge_rows_is_cut_where_the_bytes_run_out() -> None:
    """Slicing a chunk by its average row size put both huge rows of its first 20 into one 2 MB batch."""
    sizes = [10] * 40
    sizes[5] = sizes[6] = sizes[30] = MB
    buf = Buffer({T: SCHEMA}, max_rows=100_000, max_bytes=3 * MB // 2, max_age_seconds=60)
    batches = buf.add_chunk(chunk(sizes)) + buf.drain()
    cuts = [[int(c.values[0] or 0) for c in b.changes] for b in batches]
    assert [i for ids in cuts for i in ids] == list(range(1, 41))  # every row once, in order
    assert max(value_bytes(b) for b in batches) <= 3 * MB // 2
    assert [ids[0] for ids in cuts] == [1, 7, 31]  # each huge row starts a batch once the last one is full


def test_held_changes_of_a_table_being_copied_count_their_bytes() -> None:
    """While a table is copied again, what streams for it is held in memory: beyond ``hold_bytes`` streaming
    waits for the copy, however few rows that is (500,000 rows of 1 MB were allowed before)."""
    recopies = Recopies()
    recopies.round = cast(Any, object())  # a copy is under way
    recopies.hold_bytes = 4 * MB
    for k in range(3):
        recopies.held.add(chunk([MB], first=k + 1))
    assert not recopies.streaming_waits and recopies.held.bytes >= 3 * MB
    recopies.held.add(change(9, MB))
    assert recopies.streaming_waits
    assert [len(recopies.held.release(T, 0))] == [4] and recopies.held.bytes == 0


def test_the_postgresql_source_hands_large_rows_on_before_its_chunk_byte_cap(
    source_db: str, tmp_path: Path
) -> None:
    """Twelve 1 MB rows in one transaction: collected rows are handed on at ``chunk_bytes`` (4 MB), not at
    ``chunk_rows`` (10,000 rows of 1 MB would be 10 GB before the buffer sees them)."""
    schemas = load_tables(write_schemas(tmp_path))
    state = LocalStore(tmp_path / "state")
    source = PostgresSource(source_db, schemas, state=state, slot=slot_of(source_db), publication="pub")
    chunks: list[ChangeChunk] = []
    try:
        list(source.read())  # creates the slot and copies the (empty) tables
        execute(
            source_db,
            "INSERT INTO items (id, b) SELECT g, repeat(md5(g::text), 32768) FROM generate_series(1, 12) g",
        )
        deadline = time.monotonic() + 60
        while sum(len(c) for c in chunks) < 12:
            assert time.monotonic() < deadline, "the rows did not arrive"
            chunks += [c for c in source.read() if isinstance(c, ChangeChunk)]
    finally:
        source.close()
    assert sum(len(c) for c in chunks) == 12
    assert max(c.data.nbytes for c in chunks) <= source.chunk_bytes + MB + 64 * 1024
