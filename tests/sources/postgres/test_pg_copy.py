"""PostgreSQL table copies: COPY CSV read column-wise, several tables at once, and a table added later copied
while the other tables keep streaming (its own streamed changes held back until its copy is out)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pyarrow as pa
import pytest
import structlog.testing

from replicator.model import (
    COMMIT_TIME_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    Change,
    ChangeChunk,
    Column,
    Op,
    Position,
    SchemaChange,
    TableId,
    TableSchema,
)
from replicator.sources.postgres.initial_copy import CopyFailed, CopyItem, CopyRound, Held, TableCopied
from replicator.sources.postgres.resync import load_state
from replicator.sources.postgres.rows import decode_position, encode_position, position_range
from replicator.sources.postgres.snapshot import SnapshotReader
from replicator.storage import LocalStore
from tests.helpers.pg import (
    ITEM_COLS,
    ITEMS,
    ROOT,
    Rig,
    checksum,
    execute,
    fetch,
    run_until_caught_up,
    slot_of,
    source_rows,
    target_rows,
    write_load,
    write_run_config,
)

BIG_TOML = """schema = "public"
name = "big"
primary_key = ["id"]
[columns]
id = "bigint not null"
v = "text"
"""
TWO = {
    TableId("public", n): TableSchema(
        TableId("public", n), (Column.of("id", "bigint", nullable=False), Column.of("v", "text")), ("id",)
    )
    for n in ("one", "two")
}


@contextlib.contextmanager
def exported_snapshot(dsn: str) -> Iterator[tuple[int, str]]:
    """A snapshot exported by an ordinary transaction (held open), with the current WAL position."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT pg_export_snapshot(), pg_current_wal_lsn() - '0/0'::pg_lsn")
            row = cur.fetchone()
            assert row is not None
            yield int(row[1]), str(row[0])
    finally:
        conn.rollback()
        conn.close()


def decode_position_lsn(value: str) -> int:
    return decode_position(Position(value))[0]


def take_all(copy: CopyRound) -> list[CopyItem]:
    items: list[CopyItem] = []
    while not copy.finished:
        items += copy.take(5.0)
    copy.close()
    return items


def test_position_ranges_are_the_positions_of_consecutive_ordinals() -> None:
    for lsn, first, n in ((0x16B3A08, 1, 5000), (2**40 + 7, 2**36 - 3, 6), (1, 4095, 3)):
        assert position_range(lsn, first, n).to_pylist() == [
            encode_position(lsn, i).value for i in range(first, first + n)
        ]


def test_copied_values_are_exactly_postgresql_text_output(pg_dsn: str) -> None:
    """The CSV path must give what pgoutput sends: the type's text output, NULL apart from ''."""
    execute(
        pg_dsn,
        "CREATE TYPE mood AS ENUM ('ok', 'not ok')",
        "CREATE TABLE odd (id int, t text, b bytea, a text[], j jsonb, n numeric, ts timestamptz, i interval,"
        " u uuid, m mood, f boolean)",
        """INSERT INTO odd VALUES
        (1, '', '\\x00ff', '{1,NULL,3}', '{"a": "x,\\"y"}', 'NaN', '2024-02-29 23:59:59.123456+05',
         '1 year 2 mons -3 days', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'not ok', true),
        (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (3, E'two\\nlines\\t"quoted", \\\\ back\\r', '\\x', '{}', '[]', 1.5e30, 'infinity', '0', NULL,
         'ok', false),
        (4, 'NULL', NULL, '{"a,b"}', 'null', '-0.00', '-infinity', NULL, NULL, NULL, NULL),
        (5, '\\N', NULL, NULL, '"\\u00e9t\\u00e9"', '1e-20', NULL, NULL, NULL, NULL, NULL)""",
    )
    names = ["id", "t", "b", "a", "j", "n", "ts", "i", "u", "m", "f"]
    with exported_snapshot(pg_dsn) as (_, name):
        reader = SnapshotReader(pg_dsn, name)
        chunks: list[pa.Table] = []
        try:
            reader.copy(TableId("public", "odd"), names, chunks.append)
        finally:
            reader.close()
    got = sorted(tuple(r.values()) for c in chunks for r in c.to_pylist())
    conn = psycopg2.connect(pg_dsn)
    with conn.cursor() as cur:
        # format('%s') is the type's output function (a cast to text is not, for booleans).
        cols = ", ".join(f"CASE WHEN {n} IS NOT NULL THEN format('%s', {n}) END" for n in names)
        cur.execute(f"SELECT {cols} FROM odd ORDER BY id")
        want = cur.fetchall()
    conn.close()
    assert got == want
    assert all(c.schema.types == [pa.string()] * len(names) for c in chunks)


def test_a_copy_of_big_toasted_values_is_cut_by_bytes_not_by_pages(pg_dsn: str) -> None:
    """30 rows of 1 MB values fit in one heap page (TOAST keeps them aside): chunks must still stay small."""
    execute(
        pg_dsn,
        "CREATE TABLE wide (id int PRIMARY KEY, v text)",
        "ALTER TABLE wide ALTER COLUMN v SET STORAGE EXTERNAL",  # uncompressed: 1 MB on the wire each
        "INSERT INTO wide SELECT g, repeat(chr(64 + g), 1000000) FROM generate_series(1, 30) g",
    )
    [(pages,)] = fetch(pg_dsn, "SELECT pg_relation_size('wide') / current_setting('block_size')::int")
    assert pages == 1
    chunks: list[pa.Table] = []
    with exported_snapshot(pg_dsn) as (_, name):
        reader = SnapshotReader(pg_dsn, name)
        try:
            reader.copy(TableId("public", "wide"), ["id", "v"], chunks.append, chunk_bytes=2_500_000)
        finally:
            reader.close()
    assert max(c.num_rows for c in chunks) <= 3
    rows = [r for c in chunks for r in zip(c["id"].to_pylist(), c["v"].to_pylist(), strict=True)]
    assert sorted((int(i), v) for i, v in rows) == [(g, chr(64 + g) * 1_000_000) for g in range(1, 31)]


def _two_tables(dsn: str, rows: int) -> None:
    execute(
        dsn,
        *(f"CREATE TABLE {t.name} (id bigint PRIMARY KEY, v text)" for t in TWO),
        *(
            f"INSERT INTO {t.name} SELECT g, repeat('x', g % 40) FROM generate_series(1, {rows}) g"
            for t in TWO
        ),
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_copy_round_reads_tables_at_once_each_in_order_with_every_row(pg_dsn: str, workers: int) -> None:
    _two_tables(pg_dsn, 20_000)
    with exported_snapshot(pg_dsn) as (lsn, name):
        items = take_all(CopyRound(pg_dsn, TWO, snapshot=(lsn, name), workers=workers, chunk_bytes=16 << 10))
    kinds = [(type(i).__name__, i.table.name) for i in items]
    # With two workers the second table starts before the first is done; with one, strictly one by one.
    second_started = kinds.index(("Change", "two"))
    first_done = kinds.index(("TableCopied", "one"))
    assert (second_started < first_done) is (workers == 2)
    for table in TWO:
        mine = [i for i in items if i.table == table]
        first, *chunks, done = mine
        assert isinstance(first, Change) and first.op is Op.TRUNCATE
        assert first.position == encode_position(lsn - 1, 0)
        assert isinstance(done, TableCopied) and done.rows == 20_000 and done.consistent == lsn
        assert len(chunks) > 10  # page ranges, not one big read
        data = pa.concat_tables([c.data for c in chunks if isinstance(c, ChangeChunk)])
        assert data.column(POSITION_COLUMN).to_pylist() == [
            encode_position(lsn - 1, i).value for i in range(1, 20_001)
        ]
        assert set(data.column(OP_COLUMN).to_pylist()) == {"I"}
        assert data.column(COMMIT_TIME_COLUMN).null_count == 0
        assert sorted(
            (int(i), v) for i, v in zip(data["id"].to_pylist(), data["v"].to_pylist(), strict=True)
        ) == [(g, "x" * (g % 40)) for g in range(1, 20_001)]
        assert done.last == encode_position(lsn - 1, 20_000).value


def test_a_failing_copy_is_raised_to_the_source_and_stops_the_workers(pg_dsn: str) -> None:
    _two_tables(pg_dsn, 1_000)
    missing = TableId("public", "gone")
    schemas = {**TWO, missing: TableSchema(missing, TWO[TableId("public", "one")].columns, ("id",))}
    with exported_snapshot(pg_dsn) as (lsn, name):
        copy = CopyRound(pg_dsn, schemas, snapshot=(lsn, name), workers=2)
        with pytest.raises(CopyFailed, match="gone"):
            take_all(copy)
    assert not copy._thread.is_alive()


def _chunk(table: TableId, positions: list[str]) -> ChangeChunk:
    schema = TableSchema(table, (Column.of("id", "bigint", nullable=False),), ("id",))
    n = len(positions)
    return ChangeChunk(
        table,
        schema,
        pa.table(
            {
                "id": pa.array([str(i) for i in range(n)], pa.string()),
                OP_COLUMN: pa.array(["U"] * n, pa.string()),
                POSITION_COLUMN: pa.array(positions, pa.string()),
                COMMIT_TIME_COLUMN: pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
            }
        ),
    )


def test_held_changes_are_released_from_the_consistent_point_on_and_the_rest_dropped() -> None:
    t, other = TableId("public", "t"), TableId("public", "other")
    held = Held()
    before, at, after = encode_position(99, 5), encode_position(100, 1), encode_position(101, 1)
    straddling = _chunk(
        t, [encode_position(99, 7).value, encode_position(99, 8).value, at.value, after.value]
    )
    schema_change = SchemaChange(t, straddling.schema, before)
    for item in (Change(t, Op.UPDATE, ("1",), before, None), straddling, schema_change,
                 Change(t, Op.DELETE, ("2",), after, None), _chunk(other, [before.value])):  # fmt: skip
        held.add(item)
    assert held.rows == 8
    out = held.release(t, 100)
    assert held.rows == 1  # the other table's row
    assert [type(i).__name__ for i in out] == ["ChangeChunk", "SchemaChange", "Change"]
    first = out[0]
    assert isinstance(first, ChangeChunk)
    assert first.data.column(POSITION_COLUMN).to_pylist() == [at.value, after.value]
    assert first.data.column("id").to_pylist() == ["2", "3"]
    last = out[2]
    assert out[1] is schema_change and isinstance(last, Change) and last.position == after
    assert held.release(t, 100) == []


WRITE = (  # updates to both tables in small transactions
    "BEGIN; UPDATE big SET v = v || '+' WHERE id = %s;"
    " INSERT INTO big VALUES (%s, 'new') ON CONFLICT (id) DO UPDATE SET v = 'again';"
    " UPDATE items SET a = a + 1 WHERE id = %s; COMMIT"
)


def _write(dsn: str, stop: threading.Event, seed: int) -> None:
    write_load(
        dsn,
        stop,
        seed,
        WRITE,
        lambda r: (r.randrange(1, 60_000), 100_000 + r.randrange(2_000), r.randrange(1, 50)),
    )


def _items_replicated_big_not_yet(source_db: str, tmp_path: Path, big_rows: int) -> Path:
    """``items`` (50 rows) replicated by a first run; ``big`` (``big_rows`` rows) created at the source but
    not yet in schemas/. Returns the schema files' folder, where the test adds ``big.toml``."""
    folder = tmp_path / "schemas" / "tables"
    folder.mkdir(parents=True)
    (folder / "items.toml").write_text(ITEMS)
    execute(
        source_db,
        "INSERT INTO items (id, a, b) SELECT g, g, 'v' || g FROM generate_series(1, 50) g",
        "CREATE TABLE big (id bigint PRIMARY KEY, v text)",
        f"INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {big_rows}) g",
    )
    rig = Rig(source_db, tmp_path)
    rig.run_once()
    rig.close()
    return folder


@pytest.mark.parametrize("hold_rows", [500_000, 1], ids=["held in memory", "streaming waits"])
def test_a_table_added_later_is_copied_while_the_others_stream_and_its_own_changes_wait(
    source_db: str, tmp_path: Path, hold_rows: int
) -> None:
    folder = _items_replicated_big_not_yet(source_db, tmp_path, 60_000)
    (folder / "big.toml").write_text(BIG_TOML)
    rig = Rig(source_db, tmp_path)
    rig.source.copy_chunk_bytes = 32 << 10  # many small chunks: the copy spans many rounds
    rig.source.recopies.hold_rows = hold_rows
    seen: list[tuple[str, str]] = []  # (table, first position) of everything the source yields
    read = rig.source.read

    stop = threading.Event()

    def spy() -> Iterator[Change | ChangeChunk | SchemaChange]:
        for item in read():
            first = item.first if isinstance(item, ChangeChunk) else item.position
            seen.append((item.table.name, first.value))
            yield item
            if not rig.source.recopies.todo:
                stop.set()  # the copy is out: the load ran all through it

    rig.source.read = spy  # type: ignore[method-assign]
    writer = threading.Thread(target=_write, args=(source_db, stop, 3))
    writer.start()
    try:
        with structlog.testing.capture_logs() as logs:
            threading.Timer(60.0, stop.set).start()  # a bound, should the copy never finish
            rig.run_once()
    finally:
        stop.set()
        writer.join()
    rig.run_once()
    rig.close()

    copied = [e for e in logs if e["event"] in ("table_copied", "table_recopied")]
    assert [(e["event"], e["table"]) for e in copied] == [("table_recopied", "public.big")]
    consistent = int(copied[0]["consistent_point"], 16)
    copy_items = [
        i for i, (t, p) in enumerate(seen) if t == "big" and decode_position_lsn(p) == consistent - 1
    ]
    streamed_big = [i for i, (t, p) in enumerate(seen) if t == "big" and decode_position_lsn(p) >= consistent]
    streamed_items = [i for i, (t, _) in enumerate(seen) if t == "items"]
    assert len(copy_items) > 20
    if hold_rows > 1:
        # The other table flowed while the copy ran: some of its changes came out between copy chunks.
        assert any(copy_items[0] < i < copy_items[-1] for i in streamed_items)
    else:
        assert any(e["event"] == "streaming_waits_for_copy" for e in logs)
    # The added table's streamed changes came out only after its whole copy.
    assert streamed_big and min(streamed_big) > max(copy_items)
    wh = tmp_path / "wh.duckdb"
    assert checksum(target_rows(wh, "public.big", "id, v")) == checksum(
        source_rows(source_db, "big", "id, v")
    )
    assert checksum(target_rows(wh, "public.items", ITEM_COLS)) == checksum(
        source_rows(source_db, "items", ITEM_COLS)
    )


def test_sigkill_during_the_copy_of_an_added_table_then_restart_copies_it_again_and_ends_equal(
    source_db: str, tmp_path: Path
) -> None:
    # 300,000 rows take seconds to copy even on a quiet machine (the kill lands 0.8 s in, and the assertion
    # after it fails should the copy have been acknowledged by then); a million only made the test slower.
    folder = _items_replicated_big_not_yet(source_db, tmp_path, 300_000)
    config = write_run_config(tmp_path, source_db, tmp_path / "schemas")  # the same slot and staging
    (folder / "big.toml").write_text(BIG_TOML)
    staging = LocalStore(tmp_path / "staging")
    stop = threading.Event()
    writer = threading.Thread(target=_write, args=(source_db, stop, 4))
    writer.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "-c", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
        )
        deadline = time.monotonic() + 60
        while "public.big" not in load_state(staging, slot_of(source_db)).get("resync", []):  # type: ignore[operator]
            assert time.monotonic() < deadline, "the added table's copy never started"
            time.sleep(0.1)
        time.sleep(0.8)  # into the copy
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Killed before the copy was acknowledged: the restart must copy it again.
        assert "public.big" in load_state(staging, slot_of(source_db))["resync"]  # type: ignore[operator]
    finally:
        stop.set()
        writer.join()
    run_until_caught_up(config, source_db)

    assert load_state(staging, slot_of(source_db))["resync"] == []
    wh = tmp_path / "wh.duckdb"
    got = target_rows(wh, "public.big", "id, v")
    assert len(got) == len({r[0] for r in got}) >= 300_000
    assert checksum(got) == checksum(source_rows(source_db, "big", "id, v"))
    assert checksum(target_rows(wh, "public.items", ITEM_COLS)) == checksum(
        source_rows(source_db, "items", ITEM_COLS)
    )


def test_a_resync_requested_while_the_table_is_being_copied_copies_it_once_more(
    source_db: str, tmp_path: Path
) -> None:
    folder = _items_replicated_big_not_yet(source_db, tmp_path, 100_000)
    (folder / "big.toml").write_text(BIG_TOML)
    rig = Rig(source_db, tmp_path)
    rig.source.copy_chunk_bytes = 16 << 10  # some 250 chunks: more than one round takes
    big = TableId("public", "big")
    stop = threading.Event()
    with structlog.testing.capture_logs() as logs:
        rig.pipeline.start()
        rig.pipeline.capture(stop)
        assert rig.source.recopies.round is not None, "the copy ended within one round: nothing to test"
        execute(source_db, "UPDATE big SET v = 'after the first copy began' WHERE id <= 10")
        rig.source.resync(big)  # as the daemon does it, between rounds
        rig.pipeline.forget(big)
        assert rig.source.recopies.again == {big}
        rig.run_once()
    rig.close()

    events = [(e["event"], e.get("tables")) for e in logs if e["event"] == "table_copy_started"]
    assert events == [("table_copy_started", ["public.big"])] * 2
    assert [e["table"] for e in logs if e["event"] == "table_recopied"] == ["public.big"]  # the second
    assert load_state(LocalStore(tmp_path / "staging"), slot_of(source_db))["resync"] == []
    got = target_rows(tmp_path / "wh.duckdb", "public.big", "id, v")
    assert len(got) == len({r[0] for r in got}) == 100_000
    assert checksum(got) == checksum(source_rows(source_db, "big", "id, v"))
