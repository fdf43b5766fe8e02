"""PostgreSQL source: a table added to the schemas (and so to the publication) after the initial snapshot is
copied on its own under a fresh snapshot, while the other tables go on from their slot position."""

from __future__ import annotations

from pathlib import Path

import structlog.testing

from tests.helpers.pg import (
    ITEM_COLS,
    ITEMS,
    NOPK,
    Rig,
    execute,
    source_rows,
    target_rows,
)


def test_a_table_added_later_is_copied_on_its_own_and_the_others_stream_on(
    source_db: str, tmp_path: Path
) -> None:
    folder = tmp_path / "schemas" / "tables"
    folder.mkdir(parents=True)
    (folder / "items.toml").write_text(ITEMS)
    rig = Rig(source_db, tmp_path)
    execute(
        source_db,
        "INSERT INTO items (id, a, b) SELECT g, g, 'v' || g FROM generate_series(1, 50) g",
        "INSERT INTO nopk SELECT g, 'old ' || g FROM generate_series(1, 30) g",  # not replicated yet
    )
    rig.run_once()
    rig.close()

    (folder / "nopk.toml").write_text(NOPK)
    with structlog.testing.capture_logs() as logs:
        rig = Rig(source_db, tmp_path)
        execute(
            source_db,
            "INSERT INTO nopk VALUES (100, 'new')",
            "UPDATE nopk SET y = 'changed' WHERE x = 1",
            "UPDATE items SET a = -a WHERE id <= 10",
        )
        rig.run_once()
    execute(source_db, "DELETE FROM nopk WHERE x = 2", "INSERT INTO items (id, a) VALUES (51, 51)")
    rig.run_once()
    rig.close()

    copies = [(e["event"], e["table"]) for e in logs if e["event"] in ("table_copied", "table_recopied")]
    assert copies == [("table_recopied", "public.nopk")]  # items was not copied again
    wh = tmp_path / "wh.duckdb"
    assert target_rows(wh, "public.nopk", "x, y") == source_rows(source_db, "nopk", "x, y")
    assert target_rows(wh, "public.items", ITEM_COLS) == source_rows(source_db, "items", ITEM_COLS)
    assert len(target_rows(wh, "public.nopk", "x, y")) == 30
