"""Found by the differential fuzzer (``tests/fuzz``, seed 39 on DuckDB with ``--alter-during-copy``): a
column the source widened before a copy (the initial copy redone after a kill, a resync, a first start) was
copied into its declared, narrower type, so the first value only the wider type holds stopped the table
(``type_mismatch``), while the same widening met in the stream widens the target
(``tests/sources/postgres/test_pg_widening.py``). Shrunk: ``ALTER COLUMN n TYPE bigint`` and a value past
2**31 before the copy. The copy now widens the columns it reads by the stream's rule
(``rows.widened_columns``).
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.pg import Rig, execute, source_rows, target_rows

TABLE = (
    'schema = "public"\nname = "w"\nprimary_key = ["id"]\n[columns]\nid = "integer not null"\n'
    'n = "integer"\ncode = "varchar(5)"\n'
)


def test_a_column_widened_before_the_copy_is_copied_into_the_wider_type(
    source_db: str, tmp_path: Path
) -> None:
    execute(
        source_db,
        "CREATE TABLE w (id int PRIMARY KEY, n int, code varchar(5))",
        "INSERT INTO w VALUES (1, 1, 'abc')",
        "ALTER TABLE w ALTER COLUMN n TYPE bigint, ALTER COLUMN code TYPE varchar(20)",
        "INSERT INTO w VALUES (2, 1099511627776, 'longer than five')",
    )
    (tmp_path / "schemas" / "tables").mkdir(parents=True)
    (tmp_path / "schemas" / "tables" / "w.toml").write_text(TABLE)
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    problems = rig.source.problems()
    rig.close()
    assert not problems, problems  # was: public.w stopped, type_mismatch on column n
    assert target_rows(tmp_path / "wh.duckdb", "public.w", "id, n, code") == source_rows(
        source_db, "w", "id, n, code"
    )
