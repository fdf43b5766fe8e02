"""The PostgreSQL source end to end against a real server: snapshot, streaming, restarts, TOAST, TRUNCATE,
tables without a primary key and columns added at the source. The target is DuckDB; states are compared
as full sets of rows (per-table checksums of every row)."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers.pg import (
    ITEM_COLS,
    Rig,
    checksum,
    execute,
    run_until_caught_up,
    source_rows,
    target_rows,
    write_load,
    write_run_config,
    write_schemas,
)

ROOT = Path(__file__).resolve().parents[3]


LOAD = (  # inserts, updates and deletes on both tables (nopk rows are told apart by their whole value)
    "BEGIN; INSERT INTO items VALUES (%s, %s, md5(%s::text), now(), %s) ON CONFLICT (id) DO "
    "UPDATE SET a = items.a + 1, d = items.d + 1; DELETE FROM items WHERE id = %s;"
    " INSERT INTO nopk VALUES (%s, md5(random()::text)); DELETE FROM nopk WHERE x = %s; COMMIT"
)


def _load_args(rnd: random.Random) -> tuple[int | float, ...]:
    k = rnd.randrange(1, 3000)
    return (k, k, k, k / 7, rnd.randrange(1, 3000), k, rnd.randrange(1, 3000))


def _load(dsn: str, stop: threading.Event, seed: int) -> None:
    """A concurrent write load on both tables, in small transactions."""
    write_load(dsn, stop, seed, LOAD, _load_args)


def test_snapshot_then_streaming_under_concurrent_writes_ends_equal_to_the_source(
    source_db: str, tmp_path: Path
) -> None:
    execute(
        source_db,
        "INSERT INTO items SELECT g, g, repeat('v', g % 50), now(), g / 3.0 FROM generate_series(1, 20000) g",
        "INSERT INTO nopk SELECT g, 'row ' || g FROM generate_series(1, 20000) g",
    )
    stop = threading.Event()
    writer = threading.Thread(target=_load, args=(source_db, stop, 1))
    writer.start()
    threading.Timer(4.0, stop.set).start()  # the load runs through the snapshot and the first rounds
    try:
        rig = Rig(source_db, tmp_path)
        rig.run_once()
    finally:
        stop.set()
        writer.join()
    rig.run_once()
    rig.close()
    # Both tables were copied at once (a copy worker per core) under the load; both end equal.
    for table, cols in (("items", ITEM_COLS), ("nopk", "x, y")):
        want = source_rows(source_db, table, cols)
        assert len(want) > 15000
        assert checksum(target_rows(tmp_path / "wh.duckdb", f"public.{table}", cols)) == checksum(want)


def test_an_unchanged_1mb_toast_value_is_kept_when_another_column_is_updated(
    source_db: str, tmp_path: Path
) -> None:
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    big = "".join(random.Random(3).choice("abcdefghij") for _ in range(1_000_000))
    execute(source_db, f"INSERT INTO items (id, a, b) VALUES (1, 1, '{big}')")
    rig.run_once()  # the insert is merged in its own batch
    execute(source_db, "UPDATE items SET a = 2 WHERE id = 1", "UPDATE items SET a = 3 WHERE id = 1")
    rig.run_once()
    rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.items", "id, a, length(b), md5(b)") == [
        (1, 3, 1_000_000, hashlib.md5(big.encode()).hexdigest())
    ]


def test_truncate_is_applied_in_order_between_the_changes_around_it(source_db: str, tmp_path: Path) -> None:
    rig = Rig(source_db, tmp_path)
    execute(source_db, "INSERT INTO items (id, a) SELECT g, g FROM generate_series(1, 100) g")
    rig.run_once()
    execute(
        source_db,
        "INSERT INTO items (id, a) VALUES (500, 5)",
        "TRUNCATE items",
        "INSERT INTO items (id, a) VALUES (7, 7)",
    )
    rig.run_once()
    rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.items", "id, a") == [(7, 7)]


def test_a_table_without_primary_key_with_replica_identity_full_replicates_updates_and_deletes(
    source_db: str, tmp_path: Path
) -> None:
    rig = Rig(source_db, tmp_path)
    execute(source_db, "INSERT INTO nopk VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    rig.run_once()
    execute(source_db, "UPDATE nopk SET y = 'z' WHERE x = 1", "DELETE FROM nopk WHERE x = 2")
    rig.run_once()
    rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.nopk", "x, y") == [(1, "z"), (3, "c")]


def test_a_column_added_at_the_source_arrives_as_a_schema_change(source_db: str, tmp_path: Path) -> None:
    rig = Rig(source_db, tmp_path)
    execute(source_db, "INSERT INTO items (id, a) VALUES (1, 1)")
    rig.run_once()
    execute(
        source_db, "ALTER TABLE items ADD COLUMN e text", "INSERT INTO items (id, a, e) VALUES (2, 2, 'new')"
    )
    rig.run_once()
    rig.close()
    assert target_rows(tmp_path / "wh.duckdb", "public.items", "id, a, e") == [(1, 1, None), (2, 2, "new")]


def test_the_slot_moves_on_keepalives_alone_when_nothing_is_pending(source_db: str, tmp_path: Path) -> None:
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    before = rig.source.stream.flush_lsn
    # WAL that the publication does not carry (another table): only keepalives and empty transactions
    execute(source_db, "CREATE TABLE other (x int)", "INSERT INTO other SELECT generate_series(1, 1000)")
    rig.run_once()  # returns once the confirmed position passed the WAL written above
    after = rig.source.stream.flush_lsn
    rig.close()
    assert after > before


def test_sigkill_at_random_points_during_streaming_then_restart_ends_equal_without_duplicates(
    source_db: str, tmp_path: Path
) -> None:
    config = write_run_config(tmp_path, source_db, write_schemas(tmp_path))
    execute(source_db, "INSERT INTO items SELECT g, g, 'x', now(), g FROM generate_series(1, 5000) g")
    stop = threading.Event()
    writer = threading.Thread(target=_load, args=(source_db, stop, 2))
    writer.start()
    rnd = random.Random(5)
    try:
        for _ in range(4):
            proc = subprocess.Popen(
                [sys.executable, "-m", "replicator", "run", "-c", str(config)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=os.environ.copy(),
            )
            time.sleep(rnd.uniform(1.5, 4.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    finally:
        stop.set()
        writer.join()
    run_until_caught_up(config, source_db)
    want = source_rows(source_db, "items", ITEM_COLS)
    got = target_rows(tmp_path / "wh.duckdb", "public.items", ITEM_COLS)
    assert len(got) == len({r[0] for r in got})
    assert checksum(got) == checksum(want)
    nopk = target_rows(tmp_path / "wh.duckdb", "public.nopk", "x, y")
    assert len(nopk) > 0 and checksum(nopk) == checksum(source_rows(source_db, "nopk", "x, y"))
