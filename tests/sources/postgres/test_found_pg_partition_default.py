"""Found by the differential fuzzer (``tests/fuzz``): a column added with a constant DEFAULT to a
partitioned table was NULL in the target's existing rows, while every source row held the default.

PostgreSQL keeps such a column's value for the rows already there as its "missing value" in each partition
(``pg_attribute.attmissingval`` of the leaf tables); the partitioned table itself has none (no storage), so
the source read no default for it, warned ``source_column_default_unknown`` and the target's ADD COLUMN
gave NULL. Seed 39 on DuckDB, shrunk by hand to: a table partitioned by range, rows in two partitions, then
``ADD COLUMN ... DEFAULT`` mid-stream and one row changed after it.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.pg import Rig, execute, source_rows, target_rows

EVENTS = (
    'schema = "public"\nname = "events"\nprimary_key = ["id"]\n[columns]\n'
    'id = "bigint not null"\nv = "text"\n'
)
COLS = "id, v, n, tag, day"


def test_a_column_added_with_a_default_to_a_partitioned_table_gives_it_to_the_existing_rows(
    source_db: str, tmp_path: Path
) -> None:
    execute(
        source_db,
        "CREATE TABLE events (id bigint PRIMARY KEY, v text) PARTITION BY RANGE (id)",
        "CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (MINVALUE) TO (100)",
        "CREATE TABLE events_rest PARTITION OF events DEFAULT",
        "INSERT INTO events SELECT g, 'v' || g FROM generate_series(1, 5) g",
        "INSERT INTO events SELECT g, 'v' || g FROM generate_series(200, 204) g",
    )
    (tmp_path / "schemas" / "tables").mkdir(parents=True)
    (tmp_path / "schemas" / "tables" / "events.toml").write_text(EVENTS)
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    execute(
        source_db,
        "ALTER TABLE events ADD COLUMN n integer NOT NULL DEFAULT 7, ADD COLUMN tag text DEFAULT 'a, \"b\"',"
        " ADD COLUMN day date DEFAULT '2024-02-29'",
        "UPDATE events SET v = 'changed' WHERE id = 3",
        "INSERT INTO events (id, v, n) VALUES (300, 'new', 8)",
    )
    rig.run_once()
    assert not rig.pipeline.errors and not rig.source.problems()
    rig.close()
    want = source_rows(source_db, "events", COLS)
    assert len(want) == 11 and {r[2] for r in want} == {7, 8}
    assert target_rows(tmp_path / "wh.duckdb", "public.events", COLS) == want
