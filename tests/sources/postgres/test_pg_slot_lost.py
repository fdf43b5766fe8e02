"""A replication slot the server invalidated (it fell more than ``max_slot_wal_keep_size`` behind) is said
loudly and put right by a copy of every table; the daemon never retries it forever.

Found from outside: with the slot invalidated while the daemon was stopped (or while it was paused), every
reconnect got "cannot read from logical replication slot ... invalidated", which the stream took for a lost
connection: it retried with backoff forever, ``run --once`` never exited, and ``status`` showed the tables
active while nothing moved. Now start-up sees the slot's ``wal_status = 'lost'``, logs ``slot_lost`` (and
counts it in ``replicator_errors_total``), creates a new slot and copies every table again; mid-stream the
error ends the term, and the next one does the same. With ``create_slot = false`` start-up stops and says so.

The source is a cluster of this test only (a small ``max_slot_wal_keep_size``), never the shared server.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.daemon import (
    DaemonProcess,
    PrivateCluster,
    create_tables,
    free_port,
    http,
    pg_source_config,
    replicate_until_equal,
    state,
    wait_for,
)
from tests.helpers.pg import execute, fetch
from tests.helpers.support import run_cli


@pytest.fixture
def small_wal_source() -> Iterator[str]:
    cluster = PrivateCluster(
        "replicator-lostslot-", "wal_level=logical", "max_replication_slots=4", "max_wal_senders=4",
        "max_slot_wal_keep_size=32MB", "max_wal_size=64MB", "min_wal_size=32MB",
    )  # fmt: skip
    try:
        cluster.start()
        yield cluster.dsn
    finally:
        cluster.close()


def _invalidate(source: str, slot: str) -> None:
    """Write WAL past the slot's reserve and checkpoint until the server gives the slot up."""
    execute(source, "CREATE TABLE IF NOT EXISTS filler (x text)")
    for _ in range(12):
        execute(
            source, "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 20000)", "CHECKPOINT"
        )
        if fetch(source, f"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'") == [
            ("lost",)
        ]:
            return
    raise AssertionError("the server did not invalidate the slot")


def _slot_lost_count(url: str) -> float:
    code, body = http("GET", f"{url}/metrics")
    assert code == 200
    for line in str(body).splitlines():
        if line.startswith("replicator_errors_total{") and 'kind="slot_lost"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_slot_invalidated_while_stopped_or_while_paused_is_said_and_every_table_copied_again(
    tmp_path: Path, small_wal_source: str, pg_dsn: str
) -> None:
    source, target = small_wal_source, pg_dsn
    create_tables(source)
    port = free_port()
    cfg, slot = pg_source_config(tmp_path, source, target, port)
    replicate_until_equal(cfg, port, source, target)

    # Lost while the daemon is stopped: changes the slot held are gone with it.
    execute(source, "UPDATE alpha SET v = -1 WHERE id <= 10", "DELETE FROM beta WHERE id <= 5")
    _invalidate(source, slot)
    second = DaemonProcess(cfg, port, name="daemon2")
    try:
        second.wait_ready()
        wait_for(lambda: state(target) == state(source), 60, lambda: second.log.read_text()[-3000:])
        assert second.events("slot_lost"), "the lost slot was not said"
        assert "wal_status lost" in second.events("slot_lost")[0]["detail"]
        assert _slot_lost_count(second.url) >= 1

        # Lost while the daemon is paused (SIGSTOP): its walsender is terminated, and every reconnect is
        # refused. The error must end the term (not be retried forever), and the next term copies again.
        os.kill(second.proc.pid, signal.SIGSTOP)
        try:
            execute(source, "UPDATE gamma SET v = -2 WHERE id <= 10", "DELETE FROM alpha WHERE id > 190")
            _invalidate(source, slot)
        finally:
            os.kill(second.proc.pid, signal.SIGCONT)
        execute(source, "INSERT INTO beta VALUES (1000, 1, 'after')")
        wait_for(
            lambda: len(second.events("slot_lost")) >= 2 and state(target) == state(source), 90,
            lambda: second.log.read_text()[-3000:],
        )  # fmt: skip
        assert fetch(source, f"SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'") != [
            ("lost",)
        ]
    finally:
        assert second.terminate() == 0

    # Without create_slot: ``check`` and start-up stop with the reason and the way out.
    _invalidate(source, slot)
    checked = run_cli("check", "-c", str(cfg))
    assert "is LOST (wal_status lost" in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    cfg.write_text(cfg.read_text().replace("[source.postgres]\n", "[source.postgres]\ncreate_slot = false\n"))
    done = run_cli("run", "--once", "-c", str(cfg))
    assert done.returncode != 0
    assert "is lost: wal_status lost" in done.stderr and "create_slot = true" in done.stderr, done.stderr[
        -2000:
    ]
