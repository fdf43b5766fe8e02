"""The source PostgreSQL restarted under a running daemon: the daemon reconnects by itself and the target
ends equal to the source, with nothing lost and nothing applied twice.

The source is a cluster of this test only (``initdb``/``pg_ctl`` as the postgres user, ``wal_level=logical``),
never the shared development server; the target is a fresh database on the shared server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.daemon import (
    TABLES,
    DaemonProcess,
    Load,
    PrivateCluster,
    create_tables,
    free_port,
    pg_source_config,
    state,
    wait_for,
)
from tests.helpers.pg import confirmed_flush, current_lsn, fetch


@pytest.fixture
def source_postgres() -> Iterator[tuple[str, Callable[[], None]]]:
    """A logical-replication PostgreSQL cluster of this test only: (dsn, restart with ``-m fast``)."""
    cluster = PrivateCluster(
        "replicator-srcpg-", "wal_level=logical", "max_replication_slots=4", "max_wal_senders=4"
    )
    try:
        cluster.start()
        yield cluster.dsn, cluster.restart
    finally:
        cluster.close()


def duplicate_keys(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    return {
        t: fetch(dsn, f"SELECT id, count(*) FROM public.{t} GROUP BY id HAVING count(*) > 1") for t in TABLES
    }


def test_the_daemon_reconnects_by_itself_when_the_source_postgres_restarts_mid_load(
    tmp_path: Path, source_postgres: tuple[str, Callable[[], None]], pg_dsn: str
) -> None:
    source, restart = source_postgres
    target = pg_dsn
    create_tables(source)
    port = free_port()
    cfg, slot = pg_source_config(tmp_path, source, target, port)
    d = DaemonProcess(cfg, port)
    try:
        d.wait_ready()
        wait_for(lambda: state(target) == state(source), 60, "initial copy")

        before = Load(source, seed=11, first_id=10_000)
        wait_for(lambda: before.transactions > 40, 20, "load before the restart")
        restart()  # in the middle of the load, and of the daemon's streaming
        before.finish(cut_off=True)
        assert d.proc.poll() is None, "the daemon exited when its source went away"

        after = Load(source, seed=12, first_id=20_000)
        wait_for(lambda: after.transactions > 40, 20, "load after the restart")
        after.finish()
        at_end = current_lsn(source)

        wait_for(
            lambda: state(target) == state(source), 90,
            lambda: f"target never caught up; daemon log:\n{d.log.read_text()[-3000:]}",
        )  # fmt: skip
        wait_for(lambda: confirmed_flush(source, slot) >= at_end, 40, "the slot confirms everything")
        d.wait_ready()
    finally:
        rc = d.terminate()
    assert rc == 0
    assert state(target) == state(source)
    assert duplicate_keys(target) == {t: [] for t in TABLES}
    assert any(
        t[0] >= 20_000 for t in state(source)["alpha"] + state(source)["beta"] + state(source)["gamma"]
    )
    # The fast shutdown ends the replication COPY ("no COPY in progress", a DatabaseError): the stream's own
    # reconnect (connection errors) or the daemon's retry of the whole term picks it up; either way the
    # same process recovered, without an operator.
    noticed = d.events("replication_connection_lost") + d.events("term_failed")
    assert noticed, "the restart should have been noticed and retried"
