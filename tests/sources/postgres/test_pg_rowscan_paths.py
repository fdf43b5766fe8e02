"""The PostgreSQL source end to end on both row scanners (issue 16): the compiled one and its pure-Python
fallback replicate the same mixed stream into DuckDB equal to the source.

The stream mixes what the scanner takes (plain inserts, updates and deletes of several tables interleaved in
one transaction, NULLs, a table whose schema file orders its columns differently and declares one the source
lacks) with what it leaves to the full decoder (REPLICA IDENTITY FULL updates with their old row, an update
that leaves a TOAST value unchanged, TRUNCATE), with chunks so small that they fill mid-transaction."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from replicator.sources.postgres import rowscan
from replicator.sources.postgres import source as source_module
from tests.helpers.pg import ITEM_COLS, ITEMS, NOPK, Rig, execute, source_rows, target_rows

MIXED = (
    'schema = "public"\nname = "mixed"\nprimary_key = ["id"]\n[columns]\nid = "integer not null"\n'
    'y = "integer"\nz = "text"\nextra = "text"\n'
)


@pytest.fixture(params=["compiled", "pure"])
def scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pure":
        monkeypatch.setattr(source_module, "scan", rowscan.pure_scan)
        monkeypatch.setattr(source_module, "Rows", functools.partial(rowscan.Rows, pure=True))
    elif rowscan.compiled is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the compiled row scanner is not built (scripts/build_ext.sh)")
        pytest.skip("the compiled row scanner is not built (scripts/build_ext.sh)")
    return str(request.param)


def test_both_scanners_replicate_a_mixed_stream_equal_to_the_source(
    scanner: str, source_db: str, tmp_path: Path
) -> None:
    execute(source_db, "CREATE TABLE mixed (id int PRIMARY KEY, z text, y int)")
    folder = tmp_path / "schemas" / "tables"
    folder.mkdir(parents=True)
    (folder / "items.toml").write_text(ITEMS)
    (folder / "nopk.toml").write_text(NOPK)
    (folder / "mixed.toml").write_text(MIXED)
    rig = Rig(source_db, tmp_path, max_rows=50)
    rig.source._reader.threaded = scanner == "compiled"  # as the source chooses (see ``ReadAhead``)
    rig.source.chunk_rows = 7  # chunks fill mid-transaction, on either path
    try:
        rig.run_once()
        # Stored out of line: an update that leaves it alone does not send it ('u').
        execute(source_db, "ALTER TABLE items ALTER COLUMN b SET STORAGE EXTERNAL")
        big = "repeat('toast', 2000)"
        execute(
            source_db,
            "BEGIN;"
            " INSERT INTO items SELECT g, g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'v' || g END, now(), g / 3.0"
            "  FROM generate_series(1, 120) g;"
            " INSERT INTO mixed SELECT g, 'z' || g, CASE WHEN g % 4 = 0 THEN NULL ELSE g END"
            "  FROM generate_series(1, 60) g;"
            " INSERT INTO nopk SELECT g, 'y' || g FROM generate_series(1, 30) g;"
            " UPDATE items SET a = a * 10 WHERE id % 3 = 0;"
            " UPDATE nopk SET y = y || '!' WHERE x % 2 = 0;"
            " DELETE FROM mixed WHERE id % 7 = 0;"
            " DELETE FROM items WHERE id > 110;"
            " COMMIT",
            f"INSERT INTO items VALUES (500, 1, {big}, now(), 1)",
            "UPDATE items SET a = 2 WHERE id = 500",  # 'u': the TOAST value unchanged
            "BEGIN; UPDATE mixed SET y = -y; INSERT INTO items VALUES (501, NULL, NULL, NULL, NULL); COMMIT",
            "TRUNCATE nopk",
            "INSERT INTO nopk VALUES (1, 'after')",
        )
        rig.run_once()
        assert not rig.pipeline.errors
        sinks = [rows.sink for rows in rig.source._collectors.values()]
        assert len(sinks) == 3 and all(isinstance(s, rowscan.PureSink) == (scanner == "pure") for s in sinks)
    finally:
        rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.items", ITEM_COLS) == source_rows(
        source_db, "items", ITEM_COLS
    )
    assert target_rows(tmp_path / "wh.duckdb", "public.nopk", "x, y") == source_rows(
        source_db, "nopk", "x, y"
    )
    expected = [(i, y, z, None) for i, y, z in source_rows(source_db, "mixed", "id, y, z")]
    assert target_rows(tmp_path / "wh.duckdb", "public.mixed", "id, y, z, extra") == expected
    assert len(expected) == 52
