"""TRUNCATE as staged by the real stage (a one-row batch with ``_op`` 'T') empties the target in order,
exactly once, on every SQL warehouse that runs here (DuckDB and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replicator.model import Batch, Change, Column, Op, Position, TableId, TableSchema
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.warehouses.duckdb import DuckDBWarehouse
from replicator.warehouses.postgres import PostgresWarehouse
from replicator.warehouses.sql_base import SqlWarehouse, inspect_batch

T = TableSchema(
    TableId("app", "t"), (Column.of("id", "bigint", nullable=False), Column.of("v", "text")), ("id",)
)
NOW = datetime(2024, 5, 1, tzinfo=UTC)


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlWarehouse]:
    if request.param == "duckdb":
        wh: SqlWarehouse = DuckDBWarehouse(str(tmp_path / "wh.duckdb"))
    else:
        wh = PostgresWarehouse(request.getfixturevalue("pg_dsn"))
    wh.setup()
    wh.ensure_table(T)
    yield wh
    wh.close()


def rows(wh: SqlWarehouse) -> list[tuple[Any, ...]]:
    return sorted(wh._query('SELECT "id", "v" FROM "app"."t"'))


def change(op: Op, n: int, values: tuple[str | None, ...]) -> Change:
    return Change(T.table, op, values, Position(f"{n:08d}"), NOW)


def apply(wh: SqlWarehouse, stager: Stager, changes: list[Change]) -> bool:
    manifest = stager.stage(Batch(T.table, T, changes))
    return wh.apply(manifest, T, Path(stager.store.uri(manifest.data_key))).applied


def test_truncate_empties_the_target_between_the_batches_around_it_and_only_once(
    warehouse: SqlWarehouse, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "staging")
    stager = Stager(store, Quarantine(store))
    assert apply(warehouse, stager, [change(Op.INSERT, i, (str(i), f"v{i}")) for i in range(1, 4)])
    truncate = [change(Op.TRUNCATE, 10, ())]
    assert apply(warehouse, stager, truncate)
    assert rows(warehouse) == []
    assert apply(warehouse, stager, [change(Op.INSERT, 11, ("7", "seven"))])
    assert not apply(warehouse, stager, truncate)  # replayed: the ledger skips it, row 7 stays
    assert rows(warehouse) == [(7, "seven")]


def test_a_staged_truncate_is_recognised_and_a_t_mixed_with_rows_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "staging")
    manifest = Stager(store, Quarantine(store)).stage(Batch(T.table, T, [change(Op.TRUNCATE, 1, ())]))
    assert inspect_batch(Path(store.uri(manifest.data_key)), T).truncate
    table = pq.read_table(store.uri(manifest.data_key))
    doubled = pa.concat_tables([table, table])
    bad = tmp_path / "bad.parquet"
    pq.write_table(doubled, bad)
    with pytest.raises(ValueError, match="other than I, U, D"):
        inspect_batch(bad, T)
