"""What logical replication cannot carry is refused at start-up with the fix, before anything is copied:
a column PostgreSQL generates (``GENERATED ALWAYS AS ... STORED``: the copy had its values, then every
change left it NULL in the target), an UNLOGGED table (no WAL; PostgreSQL's own error named no fix), a
view, and a declared primary key that does not identify the source's rows (a narrower one folded the rows
of two tenants into one, silently). A generated column left out of the schema file is no problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.model import TableId
from replicator.schema import load_tables
from replicator.sources.postgres import PostgresSource
from replicator.sources.postgres.setup import SourceSetupError
from replicator.storage import LocalStore
from tests.helpers.pg import Rig, execute, slot_of, source_rows, target_rows

GENERATED = "CREATE TABLE g (id int PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) STORED)"


def _schema(tmp: Path, name: str, columns: str, key: str = '["id"]') -> None:
    folder = tmp / "schemas" / "tables"
    folder.mkdir(parents=True)
    (folder / f"{name}.toml").write_text(
        f'schema = "public"\nname = "{name}"\nprimary_key = {key}\n'
        f'[columns]\nid = "integer not null"\n{columns}'
    )


def _start(dsn: str, tmp: Path) -> PostgresSource:
    return PostgresSource(
        dsn, load_tables(tmp / "schemas"), state=LocalStore(tmp / "st"), slot=slot_of(dsn), publication="pub"
    )


@pytest.mark.parametrize(
    ("ddl", "name", "columns", "message"),
    [
        (GENERATED, "g", 'a = "integer"\ntwice = "integer"\n', r"public\.g: twice generated .* schema file"),
        (
            "CREATE UNLOGGED TABLE u (id int PRIMARY KEY, v text)", "u", 'v = "text"\n',
            r"public\.u is UNLOGGED: .*ALTER TABLE \"public\"\.\"u\" SET LOGGED",
        ),
        (
            "CREATE TABLE b (id int PRIMARY KEY); CREATE VIEW v AS SELECT * FROM b", "v", "",
            r"public\.v is a view: .*tables only",
        ),
        (  # narrower than the source's key: two tenants' rows 1 would be one row
            "CREATE TABLE t (tenant int, id int, PRIMARY KEY (tenant, id))", "t",
            'tenant = "integer not null"\n',
            r"public\.t: primary_key = \['id'\] .* by \['tenant', 'id'\] \(its primary key\)",
        ),
        (  # wider: a tenant change sends no old tenant, so the old row would stay
            "CREATE TABLE w (id int PRIMARY KEY, tenant int NOT NULL)", "w", 'tenant = "integer not null"\n',
            r"public\.w: primary_key = \['id', 'tenant'\] .* by \['id'\]",
        ),
        (
            "CREATE TABLE f (id int, code text UNIQUE); ALTER TABLE f REPLICA IDENTITY FULL", "f",
            'code = "text"\n',
            r"public\.f: primary_key = \['id'\] .* not unique in the source .*\['code'\]",
        ),
    ],
)  # fmt: skip
def test_what_logical_replication_cannot_carry_is_refused_with_the_fix(
    source_db: str, tmp_path: Path, ddl: str, name: str, columns: str, message: str
) -> None:
    execute(source_db, *ddl.split("; "))
    _schema(tmp_path, name, columns, '["id", "tenant"]' if name == "w" else '["id"]')
    with pytest.raises(SourceSetupError, match=message):
        _start(source_db, tmp_path)
    [(slots,)] = execute(
        source_db, f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot_of(source_db)}'"
    )
    assert slots == 0  # refused before the slot


def test_a_generated_column_left_out_of_the_schema_file_is_no_problem(source_db: str, tmp_path: Path) -> None:
    execute(source_db, GENERATED, "INSERT INTO g (id, a) VALUES (1, 10), (2, 20)")
    _schema(tmp_path, "g", 'a = "integer"\n')
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    execute(source_db, "INSERT INTO g (id, a) VALUES (3, 30)", "UPDATE g SET a = 11 WHERE id = 1")
    rig.run_once()
    rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.g", "id, a") == source_rows(source_db, "g", "id, a")


@pytest.mark.parametrize(
    ("ddl", "key"),
    [
        ("CREATE TABLE k (id int, code text NOT NULL, x int, PRIMARY KEY (x, id))", '["id", "x"]'),
        ("CREATE TABLE k (id int NOT NULL, code text NOT NULL); CREATE UNIQUE INDEX k_code ON k (code); "
         "ALTER TABLE k REPLICA IDENTITY USING INDEX k_code", '["code"]'),
        ("CREATE TABLE k (id int, code text UNIQUE); ALTER TABLE k REPLICA IDENTITY FULL", '["id", "code"]'),
        # FULL and no unique index at all: the declared key is the schema file's word
        ("CREATE TABLE k (id int, code text); ALTER TABLE k REPLICA IDENTITY FULL", '["id"]'),
    ],
)  # fmt: skip
def test_a_key_that_identifies_the_rows_is_accepted(
    source_db: str, tmp_path: Path, ddl: str, key: str
) -> None:
    execute(source_db, *ddl.split("; "))
    _schema(tmp_path, "k", 'code = "text"\nx = "integer"\n' if "x int" in ddl else 'code = "text"\n', key)
    _start(source_db, tmp_path).close()


def test_a_source_column_named_like_the_replicators_own_stops_its_table_alone(
    source_db: str, tmp_path: Path
) -> None:
    """Found from outside: ``ALTER TABLE t ADD COLUMN _seq int`` at the source raised on the stream and
    stopped every table (the next start failed the same way). Now ``t`` stops alone, mid-stream and at the
    next start, before anything with that name is staged; the other table goes on."""
    execute(
        source_db,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "CREATE TABLE u (id int PRIMARY KEY, v text)",
        "INSERT INTO t VALUES (1, 'a')",
        "INSERT INTO u VALUES (1, 'a')",
    )
    folder = tmp_path / "schemas" / "tables"
    folder.mkdir(parents=True)
    for name in ("t", "u"):
        (folder / f"{name}.toml").write_text(
            f'schema = "public"\nname = "{name}"\nprimary_key = ["id"]\n'
            '[columns]\nid = "integer not null"\nv = "text"\n'
        )
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    execute(
        source_db,
        'ALTER TABLE t ADD COLUMN "_seq" int',
        "INSERT INTO t VALUES (2, 'b', 7)",
        "INSERT INTO u VALUES (2, 'b')",
    )
    rig.run_once()
    [stop] = rig.source.problems()
    assert stop["table"] == "public.t" and stop["reason"] == "bad_column_name"
    assert "'_seq' is reserved" in str(stop["detail"]) and "rename the column at the source" in str(
        stop["todo"]
    )
    rig.close()
    execute(source_db, "INSERT INTO u VALUES (3, 'c')", "UPDATE t SET v = 'x' WHERE id = 1")
    rig = Rig(source_db, tmp_path)  # the next start: still t alone
    rig.run_once()
    assert [p["table"] for p in rig.source.problems()] == ["public.t"]
    # A resync would copy the column and fail at every start: refused, and t stays stopped.
    t = TableId("public", "t")
    assert "'_seq' is reserved" in str(rig.source.resync_refusal(t))
    rig.source.resync(t)
    rig.run_once()
    assert [p["reason"] for p in rig.source.problems()] == ["bad_column_name"]
    rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.u", "id, v") == source_rows(source_db, "u", "id, v")
    assert target_rows(tmp_path / "wh.duckdb", "public.t", "id, v") == [(1, "a")]  # nothing after the stop
