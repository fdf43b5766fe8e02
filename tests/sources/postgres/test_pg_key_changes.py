"""Key changes through a real PostgreSQL source (issue 13, defect 1): ``UPDATE ... SET id = id + 100000`` on
rows whose 400 kB TOASTed value is not touched must keep that value under the new key, including when the
same transaction moves keys again, swaps them, or updates the moved rows; and with REPLICA IDENTITY FULL."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from tests.helpers.pg import Rig, execute, source_rows, target_rows

COLS = "id, a, length(b), md5(b)"


def _big(seed: int) -> str:
    # Incompressible enough to be stored out of line (TOAST), not just compressed inline.
    rnd = random.Random(seed)
    return "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(400_000))


def test_key_changes_keep_unchanged_toasted_values_in_the_target(source_db: str, tmp_path: Path) -> None:
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    for i in (1, 2, 3, 4):
        execute(source_db, f"INSERT INTO items (id, a, b) VALUES ({i}, {i}, '{_big(i)}')")
    rig.run_once()
    execute(source_db, "UPDATE items SET id = id + 100000 WHERE id IN (1, 2)")  # the reported case
    execute(
        source_db,
        "BEGIN",
        "UPDATE items SET id = 30 WHERE id = 3",  # a chain 3 -> 30 -> 31, then an update of 31
        "UPDATE items SET id = 31 WHERE id = 30",
        "UPDATE items SET a = 33 WHERE id = 31",
        "UPDATE items SET id = -1 WHERE id = 4",  # swap 4 and 100002 through a spare key
        "UPDATE items SET id = 4 WHERE id = 100002",
        "UPDATE items SET id = 100002 WHERE id = -1",
        "COMMIT",
    )
    rig.run_once()
    execute(source_db, "ALTER TABLE items REPLICA IDENTITY FULL", "UPDATE items SET id = 7 WHERE id = 100001")
    rig.run_once()
    rig.close()
    want = source_rows(source_db, "items", COLS)
    by_id = {r[0]: r for r in want}
    assert sorted(by_id) == [4, 7, 31, 100002]
    assert by_id[4][3] == hashlib.md5(_big(2).encode()).hexdigest()  # 4 holds what 2 held
    assert target_rows(tmp_path / "wh.duckdb", "public.items", COLS) == want
