"""PostgreSQL source: a table with no primary key and no REPLICA IDENTITY FULL is insert-only with a
start-up warning, or refused, as its schema file says (``keyless``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog.testing

from replicator.schema import load_options, load_tables
from replicator.sources.postgres.setup import SourceSetupError
from replicator.sources.postgres.source import PostgresSource
from replicator.storage import LocalStore
from tests.helpers.pg import Rig, execute, slot_of, target_rows

KEYLESS = """schema = "public"
name = "keyless"
primary_key = ["x"]
[columns]
x = "integer"
y = "text"
"""


def _folder(tmp: Path, extra: str = "") -> Path:
    folder = tmp / "schemas" / "tables"
    folder.mkdir(parents=True)
    (folder / "keyless.toml").write_text(KEYLESS.replace("[columns]", extra + "[columns]"))
    return tmp / "schemas"


def test_a_keyless_table_replicates_its_inserts_after_a_start_up_warning(
    source_db: str, tmp_path: Path
) -> None:
    execute(source_db, "CREATE TABLE keyless (x int, y text)")
    _folder(tmp_path)
    with structlog.testing.capture_logs() as logs:
        rig = Rig(source_db, tmp_path)
    warnings = [e for e in logs if e["event"] == "source_table_insert_only"]
    assert [(w["log_level"], w["table"]) for w in warnings] == [("warning", "public.keyless")]
    assert "REPLICA IDENTITY FULL" in warnings[0]["detail"]
    execute(source_db, "INSERT INTO keyless VALUES (1, 'a'), (2, 'b')")
    rig.run_once()
    execute(source_db, "INSERT INTO keyless VALUES (3, 'c')")
    rig.run_once()
    rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.keyless", "x, y") == [(1, "a"), (2, "b"), (3, "c")]


def test_a_keyless_table_set_to_refuse_stops_the_start_up_with_the_fix(
    source_db: str, tmp_path: Path
) -> None:
    execute(source_db, "CREATE TABLE keyless (x int, y text)")
    folder = _folder(tmp_path, 'keyless = "refuse"\n')
    options = load_options(folder)
    assert options[next(iter(options))].keyless == "refuse"
    with pytest.raises(SourceSetupError, match=r"public\.keyless: .*REPLICA IDENTITY FULL"):
        PostgresSource(
            source_db,
            load_tables(folder),
            state=LocalStore(tmp_path / "staging"),
            slot=slot_of(source_db),
            publication="pub",
            keyless={t: o.keyless for t, o in options.items()},
        )
    # The same table with REPLICA IDENTITY FULL is not keyless: accepted whatever the option says.
    execute(source_db, "ALTER TABLE keyless REPLICA IDENTITY FULL")
    source = PostgresSource(
        source_db,
        load_tables(folder),
        state=LocalStore(tmp_path / "staging"),
        slot=slot_of(source_db),
        publication="pub",
        keyless={t: o.keyless for t, o in options.items()},
    )
    source.close()
