"""DuckDB: rounds of large values skip the vacuum (it would rewrite the row groups holding the rows they
deleted, a table of large values whole, in memory), but the file does not grow without bound: once its used
bytes pass twice their size after the last vacuum (and ``vacuum_slack_bytes`` more), that round's commit
vacuums. Updates that keep hitting a few hot rows, and now and then a cold one, leave every appended row
group partly alive: without the vacuum the file only grows."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from replicator.model import Column, TableId, TableSchema
from replicator.warehouses import DuckDBWarehouse
from tests.helpers.warehouse import Stager

BIG = TableSchema(
    TableId("app", "big"), (Column.of("id", "bigint", nullable=False), Column.of("body", "text")), ("id",)
)
ROWS = 30
KB = 1 << 10


def _used_after_skewed_updates(tmp_path: Path, slack: int) -> int:
    """Used bytes of the file after the updates."""
    wh = DuckDBWarehouse(str(tmp_path / "wh.duckdb"))
    wh.vacuum_slack_bytes = slack
    stager = Stager(tmp_path)
    rng = random.Random(7)

    def value() -> str:  # random hex compresses about as much as real text of this size
        return os.urandom(128 * KB).hex()

    try:
        wh.setup()
        wh.ensure_table(BIG)
        for lo in range(0, ROWS, 10):
            manifest, path = stager.batch(
                BIG, [("I", {"id": i, "body": value()}) for i in range(lo, lo + 10)]
            )
            assert wh.apply(manifest, BIG, path).applied
        for _ in range(60):
            ids = sorted({*rng.sample(range(3), 3), rng.randrange(3, ROWS)})
            manifest, path = stager.batch(BIG, [("U", {"id": i, "body": value()}) for i in ids])
            assert wh.apply(manifest, BIG, path).applied
        return wh._used_bytes()
    finally:
        wh.close()


@pytest.mark.parametrize("bounded", [True, False])
def test_the_file_stays_within_twice_its_vacuumed_size(tmp_path: Path, bounded: bool) -> None:
    used = _used_after_skewed_updates(tmp_path, slack=1 << 20 if bounded else 1 << 40)
    live = ROWS * 256 * KB  # the values' text; compressed, about half
    print(f"\nused {used / live:.1f} x the live values' text")
    if bounded:
        assert used <= 2 * live, used
    else:  # the control: without the vacuum the file grows past that
        assert used > 3 * live, used
