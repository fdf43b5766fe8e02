"""A column the source widens mid-stream (``ALTER COLUMN ... TYPE``: int -> bigint, a longer varchar, more
numeric digits) is widened in the target too. Found from outside: the table stopped at the first value
that did not fit the declared type (``type_mismatch``) and needed a schema edit and a resync. A declared
type that already holds the source's values (``text``, a wider number) is left as declared."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.helpers.pg import Rig, execute, source_rows, target_rows

TABLE = (
    'schema = "public"\nname = "w"\nprimary_key = ["id"]\n[columns]\nid = "integer not null"\n'
    'n = "integer"\ncode = "varchar(5)"\namount = "numeric(6,2)"\nas_text = "text"\nbig = "bigint"\n'
)
COLS = "id, n, code, amount, as_text, big"


def _types(path: Path) -> dict[str, str]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'w'"
        ).fetchall()
    return dict(rows)


def test_a_column_the_source_widens_is_widened_in_the_target(source_db: str, tmp_path: Path) -> None:
    execute(
        source_db,
        "CREATE TABLE w (id int PRIMARY KEY, n int, code varchar(5), amount numeric(6,2), as_text int,"
        " big int)",
        "INSERT INTO w VALUES (1, 1, 'abc', 1234.56, 7, 8)",
    )
    (tmp_path / "schemas" / "tables").mkdir(parents=True)
    (tmp_path / "schemas" / "tables" / "w.toml").write_text(TABLE)
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    execute(
        source_db,
        "ALTER TABLE w ALTER COLUMN n TYPE bigint, ALTER COLUMN code TYPE varchar(20),"
        " ALTER COLUMN amount TYPE numeric(12,2)",
        "INSERT INTO w VALUES (2, 1099511627776, 'longer than five', 1234567890.12, 9, 10)",
        "UPDATE w SET n = n + 4294967296 WHERE id = 1",
    )
    rig.run_once()
    assert not rig.pipeline.errors and not rig.source.problems(), (rig.pipeline.errors, rig.source.problems())
    rig.close()
    want = source_rows(source_db, "w", COLS.replace("as_text", "as_text::text"))
    assert target_rows(tmp_path / "wh.duckdb", "public.w", COLS) == want
    types = _types(tmp_path / "wh.duckdb")
    assert types["n"] == "BIGINT" and types["code"] == "VARCHAR" and types["amount"] == "DECIMAL(12,2)"
    assert types["as_text"] == "VARCHAR" and types["big"] == "BIGINT"  # as declared
