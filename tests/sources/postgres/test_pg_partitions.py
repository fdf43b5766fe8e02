"""A partitioned source table (``PARTITION BY RANGE``), replicated as the one table its schema file names.

Without ``publish_via_partition_root`` PostgreSQL publishes each change under the partition it happened
in, tables the replicator does not know: the copy had the rows, and every later change passed it by (and
the second start failed: the membership check looked for the root among the partitions and tried to add
it again). The publication the replicator creates, or one it may alter, publishes through the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.schema import load_tables
from replicator.sources.postgres import PostgresSource
from replicator.sources.postgres.setup import SourceSetupError
from replicator.storage import LocalStore
from tests.helpers.pg import Rig, execute, slot_of, source_rows, target_rows

EVENTS = (
    'schema = "public"\nname = "events"\nprimary_key = ["id", "day"]\n[columns]\n'
    'id = "bigint not null"\nday = "date not null"\nv = "text"\n'
)
DDL = (
    "CREATE TABLE events (id bigint, day date, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)",
    "CREATE TABLE events_h1 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2026-07-01')",
    "CREATE TABLE events_h2 PARTITION OF events FOR VALUES FROM ('2026-07-01') TO ('2027-01-01')",
    "INSERT INTO events SELECT g, DATE '2026-01-01' + (g * 7 % 360), 'v' || g FROM generate_series(1, 60) g",
)
COLS = "id, day, v"


def _schemas(tmp: Path) -> None:
    folder = tmp / "schemas" / "tables"
    folder.mkdir(parents=True)
    (folder / "events.toml").write_text(EVENTS)


def _changes(dsn: str) -> None:
    execute(
        dsn,
        "INSERT INTO events SELECT g, DATE '2026-01-01' + (g * 11 % 360), 'w' || g"
        " FROM generate_series(61, 90) g",
        "UPDATE events SET v = 'changed' WHERE id % 5 = 0",
        "DELETE FROM events WHERE id % 7 = 0",
        # Moves rows from the first half-year's partition into the second's (a key change).
        "UPDATE events SET day = day + 200 WHERE id IN (1, 2, 3) AND day < DATE '2026-06-01'",
    )
    execute(
        dsn,
        "BEGIN",
        "DELETE FROM events WHERE id = 4",
        "INSERT INTO events VALUES (4, '2026-12-31', 'x')",
        "COMMIT",
    )


@pytest.mark.parametrize("publication", ["created", "per_partition"])
def test_a_partitioned_table_replicates_through_its_root(
    source_db: str, tmp_path: Path, publication: str
) -> None:
    execute(source_db, *DDL)
    if publication == "per_partition":  # made by hand, without the option: the replicator alters it
        execute(source_db, "CREATE PUBLICATION pub FOR TABLE events")
    _schemas(tmp_path)
    rig = Rig(source_db, tmp_path)
    [(via_root,)] = execute(source_db, "SELECT pubviaroot FROM pg_publication WHERE pubname = 'pub'")
    assert via_root is True
    rig.run_once()
    _changes(source_db)
    rig.run_once()
    rig.close()
    rig = Rig(
        source_db, tmp_path
    )  # a second start (it failed before: the root "missing" from the publication)
    execute(source_db, "UPDATE events SET v = 'again' WHERE id = 10")
    rig.run_once()
    rig.close()
    want = source_rows(source_db, "events", COLS)
    assert len(want) > 70 and ("again",) in {(r[2],) for r in want}
    assert target_rows(tmp_path / "wh.duckdb", "public.events", COLS) == want
    # A TRUNCATE of the whole table is published (through the root too), then new rows.
    rig = Rig(source_db, tmp_path)
    execute(
        source_db,
        "TRUNCATE events",
        "INSERT INTO events VALUES (1, '2026-02-01', 'a'), (2, '2026-08-01', 'b')",
    )
    rig.run_once()
    rig.close()
    want = source_rows(source_db, "events", COLS)
    assert len(want) == 2
    assert target_rows(tmp_path / "wh.duckdb", "public.events", COLS) == want


def test_without_leave_to_alter_the_publication_the_start_says_what_to_run(
    source_db: str, tmp_path: Path
) -> None:
    execute(source_db, *DDL, "CREATE PUBLICATION pub FOR TABLE events")
    _schemas(tmp_path)
    schemas = load_tables(tmp_path / "schemas")
    with pytest.raises(SourceSetupError, match="publish_via_partition_root = true"):
        PostgresSource(
            source_db, schemas, state=LocalStore(tmp_path / "st"), slot=slot_of(source_db), publication="pub",
            create_publication=False,
        )  # fmt: skip
    [(via_root,)] = execute(source_db, "SELECT pubviaroot FROM pg_publication WHERE pubname = 'pub'")
    assert via_root is False  # left as it was
