"""A replicated table dropped and created again under its name (a migration, ``pg_restore --clean``) is copied
again: the target never keeps the old table's rows beside the new one's.

Found from outside: a DROP sends no change, and the new table's changes came under the same name, so they
were merged over the old rows: the source held 1 row, the target 3, with exit code 0. Each table's relation
OID is kept in the slot's state now; a start that finds another OID, or a Relation message that names the
table with another OID while streaming, copies the table again (``tables_recreated``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.helpers.pg import ITEM_COLS, Rig, execute, source_rows, target_rows

RECREATE = (
    "DROP TABLE items",
    "CREATE TABLE items (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric(12,2))",
    "ALTER PUBLICATION pub ADD TABLE items",  # as a migration that knows the publication would
    "INSERT INTO items (id, a) VALUES (100, 100)",
)


@pytest.mark.parametrize("while_streaming", [False, True])
def test_a_table_dropped_and_created_again_is_copied_again(
    source_db: str, tmp_path: Path, while_streaming: bool
) -> None:
    said = {"stage": "source", "kind": "table_recreated"}
    before = REGISTRY.get_sample_value("replicator_errors_total", said) or 0.0
    rig = Rig(source_db, tmp_path)
    try:
        execute(source_db, "INSERT INTO items (id, a) VALUES (1, 1), (2, 2)")
        rig.run_once()
        if not while_streaming:
            rig.close()
        execute(source_db, *RECREATE)
        execute(source_db, "INSERT INTO nopk VALUES (1, 'other table')")
        if not while_streaming:
            rig = Rig(source_db, tmp_path)  # a new start finds another OID
        rig.run_once()
        rig.run_once()  # the copy, when the stream found it
        execute(source_db, "UPDATE items SET a = 101 WHERE id = 100")  # and it streams on
        rig.run_once()
    finally:
        rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.items", ITEM_COLS) == source_rows(
        source_db, "items", ITEM_COLS
    )
    assert target_rows(tmp_path / "wh.duckdb", "public.nopk", "x, y") == [(1, "other table")]
    # Found once, copied once: the old relation's changes still in the slot do not set it off again.
    assert (REGISTRY.get_sample_value("replicator_errors_total", said) or 0.0) - before == 1
