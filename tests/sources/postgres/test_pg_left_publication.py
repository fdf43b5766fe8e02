"""A replicated table taken out of the publication (``ALTER PUBLICATION ... DROP TABLE``, a publication
re-created by hand) is said loudly and copied again; its changes of that time are never lost in silence.

Found from outside: the slot simply stops sending a table's changes once it leaves the publication, and
nothing in the stream says so. The next start put it back into the publication (``create_publication``) and
went on from the slot's position: every change made while it was out was lost, with exit code 0 and the
table shown active. Now a start that puts back a table the slot streamed before copies it again
(``tables_left_publication``), and a streaming source checks its tables every ``publication_check_seconds``
(then puts them back and resyncs them; without ``create_publication`` it stops them with the way out).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.sources.postgres import PostgresSource
from tests.helpers.pg import ITEM_COLS, Rig, execute, source_rows, target_rows


def _drop_from_publication_and_change(dsn: str) -> None:
    execute(
        dsn,
        "INSERT INTO items (id, a) VALUES (1, 1), (2, 2)",
        "ALTER PUBLICATION pub DROP TABLE items",
        "INSERT INTO items (id, a) VALUES (3, 3)",
        "UPDATE items SET a = 20 WHERE id = 2",
        "DELETE FROM items WHERE id = 1",
        "INSERT INTO nopk VALUES (1, 'other table')",
    )


def test_a_table_put_back_into_the_publication_at_start_is_copied_again(
    source_db: str, tmp_path: Path
) -> None:
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    rig.close()
    _drop_from_publication_and_change(source_db)
    rig = Rig(source_db, tmp_path)  # a new start: the publication lacks items
    try:
        rig.run_once()
        execute(source_db, "INSERT INTO items (id, a) VALUES (4, 4)")  # and it streams on after the copy
        rig.run_once()
    finally:
        rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.items", ITEM_COLS) == source_rows(
        source_db, "items", ITEM_COLS
    )
    assert target_rows(tmp_path / "wh.duckdb", "public.nopk", "x, y") == [(1, "other table")]


@pytest.mark.parametrize("create_publication", [True, False])
def test_a_table_taken_out_of_the_publication_while_streaming_is_copied_again_or_stopped(
    source_db: str, tmp_path: Path, create_publication: bool
) -> None:
    rig = Rig(source_db, tmp_path)
    try:
        rig.run_once()
        source: PostgresSource = rig.source
        source.create_publication = create_publication
        source.publication_check_seconds = 0.0  # every read
        _drop_from_publication_and_change(source_db)
        rig.run_once()
        if create_publication:
            rig.run_once()  # the copy of the resync
        problems = {p["table"]: p for p in source.problems()}
    finally:
        rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.nopk", "x, y") == [(1, "other table")]
    if create_publication:
        assert not problems, problems
        assert target_rows(tmp_path / "wh.duckdb", "public.items", ITEM_COLS) == source_rows(
            source_db, "items", ITEM_COLS
        )
    else:
        stop = problems["public.items"]
        assert stop["reason"] == "left_publication", stop
        assert "ALTER PUBLICATION pub ADD TABLE public.items" in str(stop["todo"]), stop
