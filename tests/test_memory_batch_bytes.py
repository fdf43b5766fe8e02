"""Batch bytes count what large values really cost (issue 13, point 8).

``max_bytes`` bounds memory only if a batch's count is at least what its values hold: as Python strings in
the buffer (1, 2 or 4 bytes a character plus a header) and as UTF-8 in Arrow once staged. Counting
characters made a 500k-character value of CJK text count 500 kB while it held 1 MB in Python and 1.5 MB in
Arrow. And staging must not hold more copies of a batch's large values than it has to.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replicator.buffer import Buffer, ChunkedChanges, change_bytes
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
from replicator.stage import Stager, batch_to_arrow
from replicator.storage import LocalStore, Quarantine
from replicator.values import parse_type

T = TableId("public", "big")
SCHEMA = TableSchema(
    T,
    (
        Column("id", parse_type("bigint"), False),
        Column("n", parse_type("integer")),
        Column("body", parse_type("text")),
    ),
    ("id",),
)
MB = 1 << 20
CHARS = 500_000
# A 500k-character value of each width: (its character, how many fit a 2 MB batch)
WIDTHS = {
    "ascii": ("x", 4),  # 500 kB in Python and in Arrow
    "latin-1": ("é", 2),  # 500 kB in Python, 1 MB as UTF-8
    "cjk": ("中", 1),  # 1 MB in Python, 1.5 MB as UTF-8
    "emoji": ("😀", 1),  # 2 MB in Python and as UTF-8: over the limit alone
}


def change(i: int, body: str | None, **kw: object) -> Change:
    return Change(T, Op.UPDATE, (str(i), "1", body), Position(f"{i:08d}"), **kw)  # type: ignore[arg-type]


def real_cost(batch: Batch) -> int:
    """The larger of what the batch's values hold in Python and in Arrow, measured."""
    values = [v for c in batch.changes for v in c.values]
    in_python = sum(sys.getsizeof(v) for v in values if v is not None)
    in_arrow = sum(int(pa.array([v], pa.string()).nbytes) - 8 for v in values if v is not None)  # no offsets
    return max(in_python, in_arrow)


@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_the_buffer_cuts_500k_character_values_by_what_they_hold(width: str) -> None:
    char, fit = WIDTHS[width]
    buf = Buffer({T: SCHEMA}, max_rows=1000, max_bytes=2 * MB, max_age_seconds=60)
    batches: list[Batch] = []
    for i in range(1, 9):
        batches += buf.add(change(i, char * CHARS))
    batches += buf.drain()
    assert [len(b.changes) for b in batches] == [fit] * (8 // fit)
    for b in batches:
        counted = sum(change_bytes(c) for c in b.changes)
        assert counted >= real_cost(b)
        assert len(b.changes) == 1 or counted <= 2 * MB


def test_a_change_counts_its_prior_image_and_not_a_value_it_left_unsent() -> None:
    body = "中" * CHARS
    moved = change(2, None, unchanged=frozenset({"body"}), prior=("1", "1", body))
    assert change_bytes(moved) >= len(body.encode())  # the prior image holds the value
    assert change_bytes(change(3, None, unchanged=frozenset({"body"}))) < 1024


def test_a_chunk_of_large_values_is_cut_by_its_utf8_bytes() -> None:
    n = 8
    data = pa.Table.from_arrays(
        [
            pa.array([str(i) for i in range(n)]),
            pa.array(["1"] * n),
            pa.array(["中" * CHARS] * n),  # 1.5 MB each as UTF-8
            pa.array(["U"] * n),
            pa.array([f"{i:08d}" for i in range(n)]),
            pa.nulls(n, pa.timestamp("us", tz="UTC")),
        ],
        names=[*SCHEMA.column_names, OP_COLUMN, POSITION_COLUMN, COMMIT_TIME_COLUMN],
    )
    buf = Buffer({T: SCHEMA}, max_rows=1000, max_bytes=4 * MB, max_age_seconds=60)
    batches = buf.add_chunk(ChangeChunk(T, SCHEMA, data)) + buf.drain()
    assert [len(b.changes) for b in batches] == [2, 2, 2, 2]


def _chunks(k: int, rows: int, size: int) -> Batch:
    parts = []
    for c in range(k):
        ids = range(c * rows, (c + 1) * rows)
        data = pa.table(
            {
                "id": pa.array([str(i) for i in ids]),
                "n": pa.array(["1"] * rows),
                "body": pa.array([f"{i:08d}" * (size // 8) for i in ids]),
                OP_COLUMN: pa.array(["U"] * rows),
                POSITION_COLUMN: pa.array([f"{i:08d}" for i in ids]),
                COMMIT_TIME_COLUMN: pa.nulls(rows, pa.timestamp("us", tz="UTC")),
            }
        )
        parts.append(ChangeChunk(T, SCHEMA, data))
    return Batch(T, SCHEMA, ChunkedChanges(parts))


def test_staging_chunks_keeps_their_large_values_where_they_are() -> None:
    """A batch of chunks is staged from the chunks' own buffers: combining them first copied every value
    (a batch of 1 MB values held twice its size while staged)."""
    batch = _chunks(3, 4, 256 * 1024)
    table, rejected = batch_to_arrow(batch)
    assert not rejected and table.num_rows == 12
    body = table.column("body")
    assert isinstance(batch.changes, ChunkedChanges)
    sources = {p.data.column("body").chunk(0).buffers()[2].address for p in batch.changes.parts}  # type: ignore[union-attr]
    assert {chunk.buffers()[2].address for chunk in body.chunks} == sources
    assert table.column("id").to_pylist() == list(range(12))


def test_a_staged_file_encodes_large_values_plainly_and_small_ones_by_dictionary(tmp_path: Path) -> None:
    """The Parquet writer fills a dictionary with large values before it gives up on it: they are
    written plainly (dictionary pages of 1 MB values cost about three times the batch at once). Numbers
    are written plainly too (hashing unique keys cost a third of the write, zstd takes their repeats)."""
    store = LocalStore(tmp_path)
    manifest = Stager(store, Quarantine(store)).stage(_chunks(2, 4, 256 * 1024))
    meta = pq.ParquetFile(io.BytesIO(store.get(manifest.data_key))).metadata
    names = meta.schema.names
    group = meta.row_group(0)
    encodings = {names[i]: group.column(i).encodings for i in range(len(names))}
    assert "RLE_DICTIONARY" not in encodings["body"]
    assert "RLE_DICTIONARY" in encodings[OP_COLUMN] and "RLE_DICTIONARY" not in encodings["n"]
    staged = pq.read_table(io.BytesIO(store.get(manifest.data_key)))
    assert staged.column("body").to_pylist() == [f"{i:08d}" * (256 * 1024 // 8) for i in range(8)]
