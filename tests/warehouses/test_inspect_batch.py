"""``inspect_batch`` says whether a staged file's keys are unique: a wrong "unique" skips the reduce step
and merges two changes of one key at once (a wrong "not unique" only costs time). Generated keys, sorted
(the shortcut's case), reversed and shuffled, single and composite, against a set of Python tuples."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.model import OP_COLUMN, SEQ_COLUMN, UNCHANGED_COLUMN, Column, TableId, TableSchema
from replicator.warehouses.sql_base import inspect_batch

_SINGLE = TableSchema(
    TableId("app", "one"), (Column.of("k", "text", nullable=False), Column.of("v", "text")), ("k",)
)
_INT = TableSchema(
    TableId("app", "num"), (Column.of("k", "bigint", nullable=False), Column.of("v", "text")), ("k",)
)
_PAIR = TableSchema(
    TableId("app", "two"),
    (
        Column.of("a", "bigint", nullable=False),
        Column.of("b", "text", nullable=False),
        Column.of("v", "text"),
    ),
    ("a", "b"),
)


def _write(path: Path, schema: TableSchema, keys: list[tuple[object, ...]]) -> Path:
    n = len(keys)
    columns = {
        c.name: pa.array([k[i] for k in keys], c.type.arrow) for i, c in enumerate(schema.columns[:-1])
    }
    columns["v"] = pa.nulls(n, pa.string())
    columns[OP_COLUMN] = pa.array(["U"] * n)
    columns[SEQ_COLUMN] = pa.array(range(n), pa.int64())
    columns[UNCHANGED_COLUMN] = pa.nulls(n, pa.list_(pa.string()))
    pq.write_table(pa.table(columns), path)
    return path


_order = st.sampled_from(["sorted", "reversed", "shuffled", "as drawn"])


@settings(max_examples=150, deadline=None)
@given(
    ints=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=40),
    texts=st.lists(st.text(max_size=3), min_size=1, max_size=40),
    order=_order,
    data=st.data(),
)
def test_unique_keys_is_said_exactly_when_no_key_repeats(
    tmp_path_factory: object, ints: list[int], texts: list[str], order: str, data: st.DataObject
) -> None:
    folder = tmp_path_factory.mktemp("inspect")  # type: ignore[attr-defined]
    pairs = [(i % 3, t) for i, t in zip(ints, texts, strict=False)] or [(0, "")]
    for schema, drawn in ((_INT, [(i,) for i in ints]), (_SINGLE, [(t,) for t in texts]), (_PAIR, pairs)):
        keys: list[tuple[object, ...]] = drawn  # type: ignore[assignment]
        if order == "sorted":
            keys = sorted(drawn)  # type: ignore[type-var]
        elif order == "reversed":
            keys = sorted(drawn, reverse=True)  # type: ignore[type-var]
        elif order == "shuffled":
            keys = data.draw(st.permutations(drawn))
        info = inspect_batch(_write(folder / f"{schema.table.name}.parquet", schema, keys), schema)
        assert info.unique_keys == (len(set(keys)) == len(keys)), (schema.table, keys)
        assert info.rows == len(keys)


def test_sorted_keys_with_one_repeat_are_not_unique(tmp_path: Path) -> None:
    keys = [(i,) for i in range(1000)]
    keys.insert(500, (499,))  # still in order, not strictly: the shortcut must not take it
    assert not inspect_batch(_write(tmp_path / "f.parquet", _INT, keys), _INT).unique_keys
    assert inspect_batch(_write(tmp_path / "g.parquet", _INT, keys[:500] + keys[501:]), _INT).unique_keys
