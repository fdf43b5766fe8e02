"""DuckDB hands the memory a merge of large values freed back to the system after the round (issue 13,
point 8): its jemalloc otherwise keeps it resident through the reading and staging that follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.model import Column, TableId, TableSchema
from replicator.warehouses import DuckDBWarehouse
from replicator.warehouses.duckdb import RELEASE_BYTES, allocator_free_bytes
from tests.helpers.warehouse import Stager

BIG = TableSchema(
    TableId("app", "big"), (Column.of("id", "bigint", nullable=False), Column.of("body", "text")), ("id",)
)
ROWS = 100  # of 1 MB: a merge that updates them frees several times RELEASE_BYTES


def _merge_large_values(wh: DuckDBWarehouse, stager: Stager) -> int | None:
    """Insert then update ROWS rows of 1 MB values; DuckDB's freed bytes right after the update."""
    wh.setup()
    wh.ensure_table(BIG)
    for op, fill in (("I", "a"), ("U", "b")):
        changes = [(op, {"id": i, "body": fill * (1 << 20) + str(i)}) for i in range(ROWS)]
        manifest, path = stager.batch(BIG, changes)
        assert wh.apply(manifest, BIG, path).applied
    return allocator_free_bytes()


@pytest.mark.skipif(allocator_free_bytes() is None, reason="this DuckDB build does not use jemalloc")
@pytest.mark.parametrize("release", [True, False])
def test_a_merge_of_large_values_hands_freed_memory_back(tmp_path: Path, release: bool) -> None:
    wh = DuckDBWarehouse(str(tmp_path / "wh.duckdb"))
    wh.large_merges = False  # the MERGE, which frees the most (the large-value merge hands back all it frees)
    if not release:  # the control: without the release, the same merges leave that much freed but held
        wh.release_bytes = 1 << 62
    try:
        free = _merge_large_values(wh, Stager(tmp_path))
    finally:
        wh.close()
    assert free is not None
    if release:
        assert free < RELEASE_BYTES
    else:
        assert free >= RELEASE_BYTES, "the merges no longer free much: the test would prove nothing"


@pytest.mark.skipif(allocator_free_bytes() is None, reason="this DuckDB build does not use jemalloc")
def test_a_round_of_large_values_hands_back_all_it_freed(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(str(tmp_path / "wh.duckdb"))
    wh.release_bytes = 1 << 62  # not by the amount: by the round's kind
    try:
        free = _merge_large_values(wh, Stager(tmp_path))
    finally:
        wh.close()
    assert free is not None
    assert free < 4 << 20
