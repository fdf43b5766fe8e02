"""The text the source sends does not depend on the server's session defaults (DateStyle, TimeZone,
IntervalStyle): the source pins them on every connection it opens."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.pg import Rig, dsn_params, execute, source_rows, target_rows


def test_dates_and_instants_arrive_the_same_under_a_german_datestyle_and_another_time_zone(
    source_db: str,
    tmp_path: Path,
) -> None:
    database = dsn_params(source_db)["dbname"]
    execute(
        source_db,
        f"ALTER DATABASE \"{database}\" SET DateStyle = 'SQL, DMY'",
        f"ALTER DATABASE \"{database}\" SET TimeZone = 'Asia/Kolkata'",
        f"ALTER DATABASE \"{database}\" SET IntervalStyle = 'sql_standard'",
    )
    execute(source_db, "INSERT INTO items (id, c) VALUES (1, '2024-03-15 10:00:00+00')")  # copied
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    execute(source_db, "INSERT INTO items (id, c) VALUES (2, '2024-12-31 23:30:00-05')")  # streamed
    rig.run_once()
    rig.close()
    want = source_rows(source_db, "items", "id, c")
    assert len(want) == 2
    assert target_rows(tmp_path / "wh.duckdb", "public.items", "id, c") == want
