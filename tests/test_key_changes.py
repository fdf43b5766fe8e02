"""Primary-key changes with values the source did not send (issue 13, defect 1), through stage and merge.

PostgreSQL sends an UPDATE that changes the key as the old key plus the new row, with columns whose TOASTed
value did not change marked "unchanged" (not sent). Those values belong to the row under the *old* key: the
new key usually has no row in the target yet. Every warehouse must end with the row under its new key and
its unsent values intact, whatever else the batch does with those keys, and however the changes are cut
into batches. The examples run on every warehouse (DuckDB, PostgreSQL, the Redshift path); a generated
workload compares the target with a model of the source on DuckDB.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.model import Batch, Change, Column, Op, Position, TableId, TableSchema
from replicator.schema import TableOptions
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.warehouses import DuckDBWarehouse, SqlWarehouse
from tests.helpers.warehouse import query

T = TableId("app", "docs")
DOCS = TableSchema(
    T,
    (
        Column.of("id", "bigint", nullable=False),
        Column.of("title", "text"),
        Column.of("body", "text"),  # the large value PostgreSQL leaves out when it did not change
        Column.of("n", "integer"),
    ),
    ("id",),
)
BIG = "x" * 60_000  # TOASTed at the source (> 2 kB), and within Redshift's VARCHAR(65535)
WHEN = datetime(2024, 5, 1, tzinfo=UTC)
Row = tuple[str, str | None, str | None, str | None]  # as wire text: id, title, body, n


class Source:
    """Makes the changes PostgreSQL's pgoutput would (default replica identity), numbered in order."""

    def __init__(self) -> None:
        self.at = 0

    def _pos(self) -> Position:
        self.at += 1
        return Position(f"{self.at:016X}")

    def insert(self, i: int, title: str, body: str | None, n: int = 0) -> Change:
        return Change(T, Op.INSERT, (str(i), title, body, str(n)), self._pos(), WHEN)

    def update(
        self, i: int, title: str, n: int = 0, *, body: str | None = None, moved_from: int | None = None
    ) -> Change:
        """An UPDATE; ``body`` None: not changed, so not sent. ``moved_from``: the key it had before."""
        unchanged = frozenset({"body"}) if body is None else frozenset()
        prior = None if moved_from is None else (str(moved_from), None, None, None)
        return Change(T, Op.UPDATE, (str(i), title, body, str(n)), self._pos(), WHEN, unchanged, prior)

    def delete(self, i: int) -> Change:
        return Change(T, Op.DELETE, (str(i), None, None, None), self._pos(), WHEN)


def apply(warehouse: SqlWarehouse, folder: Path, *batches: Sequence[Change]) -> None:
    """Stage each batch as the pipeline does and merge it."""
    store = LocalStore(folder)
    stager = Stager(store, Quarantine(store))
    for changes in batches:
        m = stager.stage(Batch(T, DOCS, list(changes)))
        assert warehouse.apply(m, m.schema(), Path(store.uri(m.data_key))).applied


def target_rows(warehouse: SqlWarehouse, *, soft: bool = False) -> list[tuple[Any, ...]]:
    live = ' WHERE NOT "_deleted"' if soft else ""
    return [
        (i, title, body, n)
        for i, title, body, n in query(
            warehouse, f'SELECT id, title, body, n FROM "app"."docs"{live} ORDER BY id'
        )
    ]


@pytest.fixture
def docs(wh: SqlWarehouse) -> SqlWarehouse:
    wh.ensure_table(DOCS)
    return wh


def test_a_key_change_keeps_the_unchanged_large_value_of_the_row_it_moves(
    docs: SqlWarehouse, tmp_path: Path
) -> None:
    s = Source()
    apply(docs, tmp_path, [s.insert(1, "a", BIG), s.insert(2, "b", "small")])
    apply(docs, tmp_path, [s.update(100001, "a", moved_from=1)])
    assert target_rows(docs) == [(2, "b", "small", 0), (100001, "a", BIG, 0)]


def test_a_key_change_in_the_batch_of_the_insert_takes_the_inserted_value(
    docs: SqlWarehouse, tmp_path: Path
) -> None:
    s = Source()
    apply(docs, tmp_path, [s.insert(1, "a", BIG), s.update(5, "a2", moved_from=1), s.update(5, "a3", 7)])
    assert target_rows(docs) == [(5, "a3", BIG, 7)]


def test_a_chain_of_key_changes_in_one_batch_ends_with_the_first_keys_value(
    docs: SqlWarehouse, tmp_path: Path
) -> None:
    s = Source()
    apply(docs, tmp_path, [s.insert(1, "a", BIG), s.insert(9, "z", "nine")])
    apply(
        docs,
        tmp_path,
        [
            s.update(2, "a", moved_from=1),
            s.update(3, "a", 1, moved_from=2),
            s.update(4, "a", 2, moved_from=3),
        ],
    )
    assert target_rows(docs) == [(4, "a", BIG, 2), (9, "z", "nine", 0)]


def test_two_keys_swapped_through_a_spare_key_in_one_transaction_keep_their_values(
    docs: SqlWarehouse, tmp_path: Path
) -> None:
    s = Source()
    apply(docs, tmp_path, [s.insert(1, "one", "body of one"), s.insert(2, "two", BIG)])
    swap = [
        s.update(-1, "one", moved_from=1),
        s.update(1, "two", moved_from=2),
        s.update(2, "one", moved_from=-1),
    ]
    apply(docs, tmp_path, swap)
    assert target_rows(docs) == [(1, "two", BIG, 0), (2, "one", "body of one", 0)]


def test_a_key_change_followed_by_an_update_or_a_delete_of_the_new_key(
    docs: SqlWarehouse, tmp_path: Path
) -> None:
    s = Source()
    apply(docs, tmp_path, [s.insert(1, "a", BIG), s.insert(2, "b", "bee")])
    apply(
        docs,
        tmp_path,
        [
            s.update(11, "a", moved_from=1),
            s.update(11, "a2", 5),
            s.update(12, "b", moved_from=2),
            s.delete(12),
        ],
    )
    assert target_rows(docs) == [(11, "a2", BIG, 5)]


def test_a_key_change_into_a_key_deleted_earlier_in_the_batch(docs: SqlWarehouse, tmp_path: Path) -> None:
    s = Source()
    apply(docs, tmp_path, [s.insert(1, "a", BIG), s.insert(2, "b", "old body of two")])
    apply(docs, tmp_path, [s.delete(2), s.update(2, "a", moved_from=1)])
    assert target_rows(docs) == [(2, "a", BIG, 0)]


def test_a_key_change_in_one_batch_and_an_update_of_the_new_key_in_the_next(
    docs: SqlWarehouse, tmp_path: Path
) -> None:
    s = Source()
    apply(docs, tmp_path, [s.insert(1, "a", BIG)], [s.update(2, "a", moved_from=1)], [s.update(2, "a2", 3)])
    assert target_rows(docs) == [(2, "a2", BIG, 3)]


def test_a_key_change_on_a_soft_delete_table_marks_the_old_key_and_keeps_the_value(
    docs: SqlWarehouse, tmp_path: Path
) -> None:
    docs.configure({T: TableOptions(deletes="soft")})
    fresh = TableSchema(TableId("app", "docs"), DOCS.columns, DOCS.primary_key)
    docs.run_statements(['DROP TABLE "app"."docs"'])
    docs.ensure_table(fresh)
    s = Source()
    apply(docs, tmp_path, [s.insert(1, "a", BIG), s.insert(2, "b", "bee")])
    apply(
        docs,
        tmp_path,
        [s.update(7, "a", moved_from=1), s.update(8, "b", moved_from=2), s.update(1, "b", moved_from=8)],
    )
    assert target_rows(docs, soft=True) == [(1, "b", "bee", 0), (7, "a", BIG, 0)]
    marks = query(docs, 'SELECT id FROM "app"."docs" WHERE "_deleted" ORDER BY id')
    assert marks == [(2,)]  # 8 came and went within the batch: the target never had it


# -- generated workloads: the target equals a model of the source -------------------------------------


def workload(rng: random.Random, steps: int) -> tuple[list[Change], dict[int, Row]]:
    """Random inserts, updates (the large value mostly left unchanged), key changes and deletes on a small
    key space, as pgoutput sends them, and the source's final rows."""
    s = Source()
    rows: dict[int, Row] = {}
    out: list[Change] = []
    for _ in range(steps):
        free = [k for k in range(1, 9) if k not in rows]
        kind = rng.choice(["insert", "update", "move", "move", "delete"])
        if kind == "insert" or not rows:
            if not free:
                continue
            k = rng.choice(free)
            body = rng.choice([None, "", f"body{rng.randrange(100)}" * rng.randrange(1, 50)])
            c = s.insert(k, f"t{rng.randrange(100)}", body, rng.randrange(10))
            rows[k] = (str(k), c.values[1], body, c.values[3])
            out.append(c)
            continue
        k = rng.choice(sorted(rows))
        if kind == "delete":
            out.append(s.delete(k))
            del rows[k]
            continue
        new_key = k
        if kind == "move":
            if not free:
                continue
            new_key = rng.choice(free)
        body = f"new{rng.randrange(100)}" if rng.random() < 0.25 else None
        title, n = f"t{rng.randrange(100)}", rng.randrange(10)
        out.append(s.update(new_key, title, n, body=body, moved_from=k if new_key != k else None))
        before = rows.pop(k)
        kept = before[2] if body is None else body
        rows[new_key] = (str(new_key), title, kept, str(n))
    return out, rows


def cut(rng: random.Random, changes: list[Change]) -> list[list[Change]]:
    """The changes cut into batches at random points (as the buffer might)."""
    batches: list[list[Change]] = [[]]
    for c in changes:
        batches[-1].append(c)
        if rng.random() < 0.15:
            batches.append([])
    return [b for b in batches if b]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 40))
def test_generated_key_changes_end_equal_to_the_source_on_duckdb(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    changes, expected = workload(rng, steps)
    if not changes:
        return
    with tempfile.TemporaryDirectory() as tmp:
        duck = DuckDBWarehouse(str(Path(tmp) / "w.duckdb"))
        try:
            duck.setup()
            duck.ensure_table(DOCS)
            apply(duck, Path(tmp) / "staging", *cut(rng, changes))
            got = [tuple(None if v is None else str(v) for v in r) for r in target_rows(duck)]
        finally:
            duck.close()
    assert got == [expected[k] for k in sorted(expected)], f"seed={seed} steps={steps}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_key_changes_end_equal_to_the_source_on_every_warehouse(
    docs: SqlWarehouse, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    changes, expected = workload(rng, 60)
    apply(docs, tmp_path, *cut(rng, changes))
    got = [tuple(None if v is None else str(v) for v in r) for r in target_rows(docs)]
    assert got == [expected[k] for k in sorted(expected)], f"seed={seed}"
