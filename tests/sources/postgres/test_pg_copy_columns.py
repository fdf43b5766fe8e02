"""The copy reads the table as the source has it, not as the schema file says (found by the PostgreSQL
fuzzer): a column added at the source before the copy keeps its copied values, and a schema-file column
dropped at the source before the copy comes as NULL instead of failing the copy (which restarted the
snapshot forever and stopped every table)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.helpers.pg import Rig, execute, target_rows


def test_a_column_added_at_the_source_before_the_copy_keeps_its_copied_values(
    source_db: str,
    tmp_path: Path,
) -> None:
    execute(
        source_db, "ALTER TABLE items ADD COLUMN e integer", "INSERT INTO items (id, a, e) VALUES (1, 1, 7)"
    )
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    execute(source_db, "INSERT INTO items (id, a, e) VALUES (2, 2, 8)")
    rig.run_once()
    rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.items", "id, a, e") == [(1, 1, 7), (2, 2, 8)]


def test_a_column_dropped_at_the_source_before_the_copy_is_copied_as_null_and_every_table_goes_on(
    source_db: str,
    tmp_path: Path,
) -> None:
    execute(
        source_db,
        "INSERT INTO items (id, a, d) VALUES (1, 1, 2.50)",
        "INSERT INTO nopk (x, y) VALUES (1, 'one')",
        "ALTER TABLE items DROP COLUMN d",
    )
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    execute(source_db, "INSERT INTO items (id, a) VALUES (2, 2)")
    rig.run_once()
    rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.items", "id, a, d") == [(1, 1, None), (2, 2, None)]
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        assert con.execute("SELECT x, y FROM public.nopk").fetchall() == [(1, "one")]
