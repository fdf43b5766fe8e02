"""Standby status updates keep going out while the pipeline is away from the stream (staging, long merges),
against a real PostgreSQL whose walsender gives up after ``wal_sender_timeout`` (2 s here, set per
connection). The server's own view is what is compared: the walsender's pid and the slot's confirmed flush
position in ``pg_replication_slots``, and which changes it sends after the pause."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg2
import pytest
import structlog

from replicator.sources.postgres import pgoutput as pg
from replicator.sources.postgres.stream import ReplicationStream, parse_duration

TIMEOUT = 2.0  # the walsender's wal_sender_timeout in these tests
BULK = 50_000  # rows inserted while away
SECRET = "s3cret-not-for-logs"  # a password in the DSN (the test server trusts, so it is never checked)


@dataclass
class Source:
    dsn: str
    slot: str

    def execute(self, *sql: str) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            for s in sql:
                cur.execute(s)
        conn.close()

    def slot_state(self) -> tuple[int | None, int]:
        """(walsender pid or None, confirmed flush LSN) as the server has them."""
        conn = psycopg2.connect(self.dsn)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT active_pid, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                (self.slot,),
            )
            row = cur.fetchone()
        conn.close()
        assert row is not None
        return row[0], pg.parse_lsn(row[1])

    def stream(self) -> ReplicationStream:
        dsn = f"{self.dsn} password={SECRET} options='-c wal_sender_timeout={int(TIMEOUT)}s'"
        return ReplicationStream(dsn, self.slot, "pub", idle_seconds=0.2)  # status_interval: the default 10 s


@pytest.fixture
def source(pg_dsn: str) -> Iterator[Source]:
    slot = f"s_{uuid.uuid4().hex[:10]}"
    src = Source(pg_dsn, slot)
    src.execute(
        "CREATE TABLE t (id int PRIMARY KEY)",
        "CREATE PUBLICATION pub FOR TABLE t",
        f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')",
    )
    yield src
    for _ in range(50):
        if src.slot_state()[0] is None:
            break
        time.sleep(0.1)
    src.execute(f"SELECT pg_drop_replication_slot('{slot}')")


@dataclass
class Reader:
    """Decodes what a stream yields: inserted ids in order and, per id, the end LSN of its transaction."""

    stream: ReplicationStream
    decoder: pg.Decoder = field(default_factory=pg.Decoder)
    ids: list[int] = field(default_factory=list)
    end_of: dict[int, int] = field(default_factory=dict)

    def read_until(self, *wanted: int) -> list[int]:
        """Read until every wanted id and its commit arrived in this call (the shared server may decode other
        databases' WAL first); the ids read by this call."""
        start = len(self.ids)
        open_ids: list[int] = []
        committed: set[int] = set()
        deadline = time.monotonic() + 60
        while not set(wanted) <= committed:
            assert time.monotonic() < deadline, f"ids {wanted} did not arrive within 60 s"
            for run in self.stream.messages():
                for payload in run:
                    msg = self.decoder.decode(payload)
                    if isinstance(msg, pg.Insert):
                        value = msg.new.values[0]
                        assert value is not None
                        self.ids.append(int(value))
                        open_ids.append(int(value))
                    elif isinstance(msg, pg.Commit):
                        self.end_of.update(dict.fromkeys(open_ids, msg.end_lsn))
                        committed.update(open_ids)
                        open_ids = []
        return self.ids[start:]


def away(source: Source, seconds: float) -> list[tuple[int | None, int]]:
    """The pipeline busy elsewhere (a long merge): nobody touches the stream; the slot as seen meanwhile."""
    seen = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        seen.append(source.slot_state())
        time.sleep(0.1)
    return seen


def test_a_merge_longer_than_the_walsender_timeout_keeps_the_connection_and_confirms_no_more(
    source: Source,
) -> None:
    stream = source.stream()
    reader = Reader(stream)
    source.execute("INSERT INTO t VALUES (1), (2)")
    source.execute("INSERT INTO t VALUES (3), (4)")
    assert reader.read_until(1, 2, 3, 4) == [1, 2, 3, 4]
    staged = reader.end_of[2]
    assert staged < reader.end_of[4]
    stream.confirm(staged)  # only the first transaction is durably staged; the second is merely read
    pid, _ = source.slot_state()
    assert pid is not None
    # WAL keeps coming while the pipeline is away: the walsender has data for us that nobody reads
    source.execute(f"INSERT INTO t SELECT generate_series(5, {BULK + 4})")

    seen = away(source, 3 * TIMEOUT)

    after = reader.read_until(BULK + 4)
    seen.append(source.slot_state())
    stream.close()
    assert {p for p, _ in seen} == {pid}  # the same walsender throughout: never dropped, never replaced
    assert stream.reconnects == 0
    assert after == list(range(5, BULK + 5))  # nothing resent: a reconnect would resend 3 and 4 (unconfirmed)
    assert max(lsn for _, lsn in seen) <= staged  # the slot never passed the durably staged position
    assert seen[-1][1] == staged  # and the confirmed position reached the server while away
    assert stream.thread_updates >= 2


def test_a_connection_lost_while_away_is_logged_and_the_next_read_resumes_from_the_confirmed_position(
    source: Source,
) -> None:
    stream = source.stream()
    reader = Reader(stream)
    source.execute("INSERT INTO t VALUES (1)")
    source.execute("INSERT INTO t VALUES (2)")
    reader.read_until(1, 2)
    stream.confirm(reader.end_of[1])
    pid, _ = source.slot_state()
    with structlog.testing.capture_logs() as logs:
        source.execute(f"SELECT pg_terminate_backend({pid})")
        seen = away(source, 2 * TIMEOUT)  # the status thread's updates fail on the dead connection
        after = reader.read_until(2)
    seen.append(source.slot_state())
    stream.close()
    failed = [e for e in logs if e["event"] == "replication_status_update_failed"]
    assert failed, [e["event"] for e in logs]
    assert failed[0]["log_level"] == "warning" and failed[0]["slot"] == source.slot
    assert stream.reconnects == 1
    assert after == [2]  # resent from the confirmed position: the unconfirmed transaction, nothing before
    new_pid = seen[-1][0]
    assert new_pid not in (None, pid)
    assert max(lsn for _, lsn in seen) <= reader.end_of[1]
    assert SECRET not in repr(logs)


def test_a_walsender_that_timed_out_anyway_is_reconnected_not_raised(source: Source) -> None:
    stream = source.stream()
    reader = Reader(stream)
    source.execute("INSERT INTO t VALUES (1)")
    source.execute("INSERT INTO t VALUES (2)")
    reader.read_until(1, 2)
    stream.confirm(reader.end_of[1])
    pid, _ = source.slot_state()
    stream._stop.set()  # no status thread (as before it existed): the server drops us without a word
    seen = away(source, 3 * TIMEOUT)
    assert seen[-1][0] != pid, "the walsender should have timed out"
    after = reader.read_until(2)
    stream.close()
    assert stream.reconnects == 1
    assert after == [2]


def test_close_stops_the_status_thread_and_releases_the_slot(source: Source) -> None:
    stream = source.stream()
    source.execute("INSERT INTO t VALUES (1)")
    Reader(stream).read_until(1)
    name = f"pg-status-{source.slot}"
    assert [t.name for t in threading.enumerate()].count(name) == 1
    stream.close()
    assert name not in [t.name for t in threading.enumerate()]
    deadline = time.monotonic() + 10
    while source.slot_state()[0] is not None:
        assert time.monotonic() < deadline, "the slot is still in use after close"
        time.sleep(0.05)


def test_the_status_interval_stays_inside_the_servers_wal_sender_timeout(source: Source) -> None:
    stream = source.stream()
    source.execute("INSERT INTO t VALUES (1)")
    Reader(stream).read_until(1)
    stream.close()
    assert stream._interval == pytest.approx(TIMEOUT / 3)
    assert [parse_duration(s) for s in ("1min", "60s", "500ms", "0", "2h", "1500", "nonsense")] == [
        60.0,
        60.0,
        0.5,
        0.0,
        7200.0,
        1.5,
        None,
    ]
