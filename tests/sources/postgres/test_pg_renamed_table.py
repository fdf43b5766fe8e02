"""A replicated table renamed (or moved to another schema) at the source while the slot streams stops alone,
saying its new name; nothing of it is skipped in silence.

Found from outside: after ``ALTER TABLE items RENAME TO items_renamed``, pgoutput sends the table's changes
under the new name, which no schema file declares. The source took it for a table it does not replicate and
skipped every later change of it, while the slot confirmed past them and ``status`` showed the table active:
the target stayed behind for good, and only the next start said the table was missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.pg import Rig, current_lsn, execute, target_rows


@pytest.mark.parametrize(
    ("ddl", "new_name"),
    [
        ("ALTER TABLE items RENAME TO items_renamed", "public.items_renamed"),
        ("CREATE SCHEMA moved; ALTER TABLE items SET SCHEMA moved", "moved.items"),
    ],
)
def test_a_table_renamed_mid_stream_stops_alone_with_its_new_name(
    source_db: str, tmp_path: Path, ddl: str, new_name: str
) -> None:
    rig = Rig(source_db, tmp_path)
    try:
        rig.run_once()
        execute(
            source_db,
            "INSERT INTO items (id, a) VALUES (1, 1), (2, 2)",
            "INSERT INTO nopk VALUES (1, 'before')",
            # Changes before the rename, in the rename's own transaction: they are the table's, and kept.
            f"BEGIN; INSERT INTO items (id, a) VALUES (3, 3); {ddl}; COMMIT",
            f"INSERT INTO {new_name} (id, a) VALUES (4, 4)",
            f"UPDATE {new_name} SET a = 10 WHERE id = 1",
            "INSERT INTO nopk VALUES (2, 'after')",
        )
        written = current_lsn(source_db)
        rig.run_once()
        problems = {p["table"]: p for p in rig.source.problems()}
        flushed = rig.source.stream.flush_lsn
    finally:
        rig.close()
    stop = problems.get("public.items")
    assert stop is not None, "the renamed table was not stopped: its changes were skipped in silence"
    assert stop["reason"] == "source_table_renamed", stop
    assert new_name in str(stop["detail"]) and "resync public.items" in str(stop["todo"]), stop
    # What came before the rename is in the target; nothing after it was merged as if it were the table's.
    assert target_rows(tmp_path / "wh.duckdb", "public.items", "id, a") == [(1, 1), (2, 2), (3, 3)]
    # The other table goes on, and the stopped one holds no WAL.
    assert target_rows(tmp_path / "wh.duckdb", "public.nopk", "x, y") == [(1, "before"), (2, "after")]
    assert flushed >= written
