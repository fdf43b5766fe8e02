"""A bad value arriving in the PostgreSQL stream stops its table alone, in-process (issue 13, defect 2).

``bad.n`` is text at the source and declared ``integer``: the initial copy's values fit, a later one does
not. Its changes share transactions with ``items``'s, so the slot can only move on if the stopped table
stops holding those transactions. The stop survives a restart of the source; a resync with the type fixed
clears it and copies the table afresh into DuckDB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from replicator.model import TableId
from replicator.sources.postgres.resync import load_state
from replicator.storage import Quarantine
from tests.helpers.pg import ITEM_COLS, ITEMS, Rig, execute, source_rows, target_rows

BAD = TableId("public", "bad")
BAD_TOML = 'schema = "public"\nname = "bad"\nprimary_key = ["id"]\n[columns]\nid = "integer"\nn = "{}"\n'


def _schemas(tmp: Path, n: str) -> None:
    folder = tmp / "schemas" / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.toml").write_text(ITEMS)
    (folder / "bad.toml").write_text(BAD_TOML.format(n))


def _rows(rig: Rig, table: str, cols: str) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in rig.warehouse.query(f"SELECT {cols} FROM public.{table}")), key=repr)


def _items(first: int) -> str:
    return (
        f"INSERT INTO items SELECT g, g, 'x' || g, now(), 1.5 FROM generate_series({first}, {first + 99}) g"
    )


def test_a_value_streamed_into_a_column_it_does_not_fit_stops_its_table_and_the_slot_still_moves_on(
    source_db: str,
    tmp_path: Path,
) -> None:
    execute(source_db, "CREATE TABLE bad (id int PRIMARY KEY, n text)", "INSERT INTO bad VALUES (1, '1')")
    _schemas(tmp_path, "integer")
    rig = Rig(source_db, tmp_path)
    try:
        rig.run_once()  # the initial copy: '1' is an integer
        execute(
            source_db,
            f"BEGIN; {_items(1)}; INSERT INTO bad VALUES (2, 'two'); {_items(101)}; COMMIT",
            f"BEGIN; INSERT INTO bad VALUES (3, '3'); {_items(201)}; COMMIT",
        )
        rig.run_once()  # returns only once the slot confirmed the server's position: nothing holds it
        assert _rows(rig, "items", ITEM_COLS) == source_rows(source_db, "items", ITEM_COLS)
        stop = load_state(rig.staging, rig.source.slot)["stopped"]["public.bad"]  # type: ignore[index]
        assert stop["reason"] == "type_mismatch" and "'two' is not a valid integer" in stop["detail"]
        assert any(e["table"] == "public.bad" for e in Quarantine(rig.staging).entries())
        assert not rig.pipeline.errors
    finally:
        rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.bad", "id, n") == [(1, 1)]

    restarted = Rig(source_db, tmp_path, max_rows=100)  # the same slot and state
    try:
        execute(source_db, f"BEGIN; INSERT INTO bad VALUES (4, 'four'); {_items(301)}; COMMIT")
        restarted.run_once()
        assert _rows(restarted, "bad", "id, n") == [(1, 1)], "still stopped"
        assert len(_rows(restarted, "items", "id")) == 400
        # A resync with the type still wrong: the re-copy stops it again, the stream goes on. Small copy
        # chunks and batches: the stop comes while the copy is still running.
        execute(source_db, "INSERT INTO bad SELECT g, g::text FROM generate_series(10, 3000) g")
        restarted.source.copy_chunk_bytes = 1024
        restarted.pipeline.forget(BAD)
        restarted.source.resync(BAD)
        execute(source_db, _items(401))
        restarted.run_once()
        again = load_state(restarted.staging, restarted.source.slot)["stopped"]["public.bad"]  # type: ignore[index]
        assert again["since"] > stop["since"] and "is not a valid integer" in again["detail"]
        assert load_state(restarted.staging, restarted.source.slot)["resync"] == [], "no copy is still wanted"
        assert len(_rows(restarted, "items", "id")) == 500
    finally:
        restarted.close()

    _schemas(tmp_path, "text")  # the fix, then what ``replicator resync public.bad`` does
    fixed = Rig(source_db, tmp_path)
    try:
        fixed.pipeline.forget(BAD)
        fixed.source.resync(BAD)
        fixed.warehouse.query('DELETE FROM "public"."bad"')  # the control store empties the target
        execute(source_db, "INSERT INTO bad VALUES (5, 'five')")
        fixed.run_once()
        assert load_state(fixed.staging, fixed.source.slot)["stopped"] == {}, "the resync cleared the stop"
    finally:
        fixed.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.bad", "id, n") == source_rows(
        source_db, "bad", "id, n"
    )
