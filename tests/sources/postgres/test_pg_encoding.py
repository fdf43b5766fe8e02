"""A source database that is not UTF-8 (LATIN1, as older databases often are) replicates its text exactly.

Found from outside: the copy was right, but pgoutput sends values in the client's encoding, which was the
database's, so the first streamed change with a non-ASCII character reached staging as LATIN1 bytes and the
stream stopped for every table (``ArrowInvalid: Invalid UTF8 sequence``). The source's sessions now ask for
UTF-8, and PostgreSQL converts.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.helpers.pg import Rig, drop_database, execute, source_rows, target_rows, with_dbname

TABLE = (
    'schema = "public"\nname = "t"\nprimary_key = ["id"]\n[columns]\nid = "integer not null"\nv = "text"\n'
)


def test_a_latin1_database_replicates_its_text_exactly(pg_dsn: str, tmp_path: Path) -> None:
    name = f"latin1_{uuid.uuid4().hex[:10]}"
    execute(
        pg_dsn, f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    )
    dsn = with_dbname(pg_dsn, name)
    try:
        execute(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t VALUES (1, 'café ü ß')")
        (tmp_path / "schemas" / "tables").mkdir(parents=True)
        (tmp_path / "schemas" / "tables" / "t.toml").write_text(TABLE)
        rig = Rig(f"{dsn} application_name=l_{uuid.uuid4().hex[:10]}", tmp_path)
        rig.run_once()  # the copy
        execute(dsn, "INSERT INTO t VALUES (2, 'naïve Æ ÿ')", "UPDATE t SET v = v || ' é' WHERE id = 1")
        rig.run_once()  # the stream
        rig.close()
        want = source_rows(dsn, "t", "id, v")
        assert want == [(1, "café ü ß é"), (2, "naïve Æ ÿ")]
        assert target_rows(tmp_path / "wh.duckdb", "public.t", "id, v") == want
    finally:
        drop_database(pg_dsn, dsn)
