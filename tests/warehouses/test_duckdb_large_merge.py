"""DuckDB merges a batch of large values in other statements than its MERGE (``_LargeMerge``: deletes by key,
rows sending little updated in place per set of unsent columns, the others deleted and inserted again in
slices, with their unsent values looked up by key): the target must end exactly as the MERGE leaves it.

A differential test: seeded random batches (inserts, updates of column subsets with unsent "unchanged"
columns, deletes, re-inserts, repeated keys, NULLs, small and large values) go to two DuckDB warehouses, one
merging with the MERGE only and one taking the large-value merge for every batch with random thresholds,
and both tables are compared after every batch: hard and soft deletes, a composite key, and a column the
source dropped (set to NULL by updates, kept by the target)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from replicator.model import Column, TableId, TableSchema
from replicator.schema import TableOptions
from replicator.sql import quote_ident, quote_table
from replicator.warehouses import DuckDBWarehouse
from replicator.warehouses.sql_base import BatchInfo, inspect_batch
from tests.helpers.warehouse import Stager, query

SINGLE = TableSchema(
    TableId("app", "docs"),
    (
        Column.of("id", "bigint", nullable=False),
        Column.of("n", "integer"),
        Column.of("body", "text"),
        Column.of("note", "text"),
        Column.of("blob", "bytea"),
    ),
    ("id",),
)
COMPOSITE = TableSchema(
    TableId("app", "parts"),
    (
        Column.of("tenant", "text", nullable=False),
        Column.of("id", "bigint", nullable=False),
        Column.of("body", "text"),
        Column.of("note", "text"),
    ),
    ("tenant", "id"),
)
BATCHES = 14


def _value(rng: random.Random, kind: str, salt: int) -> Any:
    roll = rng.random()
    if roll < 0.1:
        return None
    size = rng.choice([0, 3, 200, 5_000, 40_000, 120_000]) if roll < 0.9 else 300_000
    if kind == "bytea":
        return bytes([salt % 251]) * size
    if kind == "integer":
        return rng.randrange(-1000, 1000)
    return (f"{salt}:" + "x" * size)[: max(size, 1)] if size else ""


def _key(schema: TableSchema, rng: random.Random) -> dict[str, Any]:
    if len(schema.primary_key) == 2:
        return {"tenant": rng.choice(["a", "b", "c"]), "id": rng.randrange(12)}
    return {"id": rng.randrange(30)}


def _batch(
    schema: TableSchema, rng: random.Random, salt: int
) -> tuple[list[tuple[str, dict[str, Any]]], dict[int, list[str]]]:
    """Random changes: a key may change several times (a delete then a re-insert included)."""
    changes: list[tuple[str, dict[str, Any]]] = []
    unchanged: dict[int, list[str]] = {}
    non_key = [c for c in schema.columns if c.name not in schema.primary_key]
    for _ in range(rng.randrange(1, 40)):
        key = _key(schema, rng)
        op = rng.choices(["I", "U", "D"], weights=[3, 5, 2])[0]
        values = dict(key)
        if op != "D":
            unsent = [c.name for c in non_key if op == "U" and rng.random() < 0.4]
            for c in non_key:
                if c.name not in unsent:
                    values[c.name] = _value(rng, c.type.kind, salt + len(changes))
            if unsent:
                unchanged[len(changes)] = unsent
        changes.append((op, values))
    return changes, unchanged


def _rows(
    wh: DuckDBWarehouse, schema: TableSchema, *, soft_delete: bool, extra: tuple[str, ...]
) -> list[Any]:
    names = [*schema.column_names, *extra]
    cols = [f"md5(CAST({quote_ident(c)} AS VARCHAR))" for c in names]
    if soft_delete:
        cols += ['"_deleted"', '"_deleted_at" IS NULL']
    keys = ", ".join(quote_ident(k) for k in schema.primary_key)
    return query(wh, f"SELECT {', '.join(cols)} FROM {quote_table(schema.table)} ORDER BY {keys}")


def _open(path: Path, *, large: bool, soft_delete: bool, table: TableId) -> DuckDBWarehouse:
    wh = DuckDBWarehouse(str(path))
    wh.large_merges = large
    if large:
        wh.large_batch_row_bytes = 0  # every batch takes the large-value merge
        wh.slice_bytes = 150_000  # and rewrites its rows in several slices
    wh.setup()
    wh.configure({table: TableOptions(deletes="soft" if soft_delete else "hard")})
    return wh


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("soft_delete", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("schema", [SINGLE, COMPOSITE], ids=["single_key", "composite_key"])
def test_the_large_value_merge_leaves_the_target_as_the_merge_does(
    tmp_path: Path, schema: TableSchema, soft_delete: bool, seed: int
) -> None:
    rng = random.Random(f"{seed}:{schema.table}:{soft_delete}")
    stager = Stager(tmp_path)
    merge = _open(tmp_path / "merge.duckdb", large=False, soft_delete=soft_delete, table=schema.table)
    large = _open(tmp_path / "large.duckdb", large=True, soft_delete=soft_delete, table=schema.table)
    took_large = []
    original = large._merge_rows

    def spy(*args: Any, **kwargs: Any) -> None:
        took_large.append(large._is_large(args[0], args[2], args[3]))
        original(*args, **kwargs)

    large._merge_rows = spy  # type: ignore[method-assign]
    try:
        for wh in (merge, large):
            wh.ensure_table(schema)
        # The last batches lack ``note`` (dropped at the source): updates set it to NULL, the target keeps it.
        narrow = TableSchema(
            schema.table, tuple(c for c in schema.columns if c.name != "note"), schema.primary_key
        )
        for i in range(BATCHES):
            shape = schema if i < BATCHES - 3 else narrow
            changes, unchanged = _batch(shape, rng, salt=i * 1000)
            manifest, path = stager.batch(shape, changes, unchanged=unchanged)
            large.large_row_bytes = rng.choice([0, 20_000, 1 << 40])  # all rewritten, mixed, all in place
            applied = [wh.apply(manifest, shape, path) for wh in (merge, large)]
            assert [(a.inserted, a.deleted) for a in applied[1:]] == [
                (applied[0].inserted, applied[0].deleted)
            ]
            extra = ("note",) if shape is narrow else ()
            expected = _rows(merge, shape, soft_delete=soft_delete, extra=extra)
            assert _rows(large, shape, soft_delete=soft_delete, extra=extra) == expected, f"batch {i}"
    finally:
        merge.close()
        large.close()
    assert took_large and all(took_large), "the large-value merge was not taken: the test proves nothing"


def test_a_batch_of_small_rows_keeps_the_merge(tmp_path: Path) -> None:
    """Small rows that send every column are merged by the MERGE (its speed), large ones are not."""
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    stager = Stager(tmp_path)
    try:
        wh.setup()
        wh.ensure_table(SINGLE)
        small = [("I", {"id": i, "n": i, "body": "b" * 100, "note": "n", "blob": b"x"}) for i in range(50)]
        big = [
            ("U", {"id": i, "n": i, "body": f"{i}" + "b" * 20_000, "note": "n", "blob": b"x"})
            for i in range(50)
        ]
        unsent = [("U", {"id": 1, "n": 5})]
        for changes, unchanged, expected in (
            (small, None, False),
            (big, None, True),
            (unsent, {0: ["body", "note", "blob"]}, True),
        ):
            manifest, path = stager.batch(SINGLE, changes, unchanged=unchanged)
            info: BatchInfo = inspect_batch(path, SINGLE)
            assert wh._is_large(SINGLE, path, info) is expected
            assert wh.apply(manifest, SINGLE, path).applied
    finally:
        wh.close()
