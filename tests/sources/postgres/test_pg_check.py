"""``replicator check`` with a PostgreSQL source runs start-up's checks (it checked no PostgreSQL source at
all before), creates nothing, and says what the first run will create."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.pg import dsn_params, execute
from tests.helpers.support import run_cli

TABLE = (
    'schema = "public"\nname = "t"\nprimary_key = [{key}]\n[columns]\nid = "integer not null"\nv = "text"\n'
)


def _config(tmp: Path, dsn: str, *, key: str = '"id"', extra: str = "") -> Path:
    (tmp / "schemas" / "tables").mkdir(parents=True, exist_ok=True)
    (tmp / "schemas" / "tables" / "t.toml").write_text(TABLE.format(key=key))
    p = dsn_params(dsn)
    cfg = tmp / "r.toml"
    cfg.write_text(
        f'schemas = "{tmp / "schemas"}"\n[source]\nkind = "postgres"\n[source.postgres]\n'
        f'host = "{p["host"]}"\nport = {p["port"]}\ndatabase = "{p["dbname"]}"\nuser = "{p["user"]}"\n'
        f'sslmode = "disable"\nslot_name = "chk_{tmp.name[-8:]}"\npublication_name = "chk"\n{extra}'
        f'[staging]\npath = "{tmp / "stage"}"\n[warehouse]\nkind = "duckdb"\npath = "{tmp / "w.duckdb"}"\n'
    )
    return cfg


def _slots_and_publications(dsn: str) -> tuple[int, int]:
    [(slots,)] = execute(
        dsn, f"SELECT count(*) FROM pg_replication_slots WHERE database = '{dsn_params(dsn)['dbname']}'"
    )
    [(pubs,)] = execute(dsn, "SELECT count(*) FROM pg_publication")
    return slots, pubs


def test_check_passes_a_ready_source_and_creates_nothing(source_db: str, tmp_path: Path) -> None:
    execute(source_db, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    out = run_cli("check", "-c", str(_config(tmp_path, source_db)))
    assert out.returncode == 0, out.stdout + out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("ok    source"))
    assert "1 tables ok" in line and "the first run does it" in line and "created by the first run" in line
    assert _slots_and_publications(source_db) == (0, 0)
    assert not (tmp_path / "w.duckdb").exists()


def test_check_fails_with_the_fix(source_db: str, tmp_path: Path) -> None:
    execute(source_db, "CREATE TABLE t (tenant int, id int, v text, PRIMARY KEY (tenant, id))")
    cfg = _config(tmp_path, source_db)
    (tmp_path / "schemas" / "tables" / "t.toml").write_text(
        TABLE.format(key='"id"').replace('v = "text"', 'v = "text"\ntenant = "integer"')
    )
    out = run_cli("check", "-c", str(cfg))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL  source: SourceSetupError: public.t: primary_key = ['id']" in out.stdout
    assert "Declare primary_key = ['tenant', 'id']" in out.stdout


def test_without_leave_to_create_a_missing_publication_fails(source_db: str, tmp_path: Path) -> None:
    execute(source_db, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    out = run_cli("check", "-c", str(_config(tmp_path, source_db, extra="create_publication = false\n")))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL  source: SourceSetupError: publication 'chk' does not exist" in out.stdout
