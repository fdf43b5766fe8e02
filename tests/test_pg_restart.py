"""The source PostgreSQL restarted under a running daemon: the daemon reconnects by itself and the target
ends equal to the source, with nothing lost and nothing applied twice.

The source is a cluster of this test only (``initdb``/``pg_ctl`` as the postgres user, ``wal_level=logical``),
never the shared development server; the target is a fresh database on the shared server.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.test_operations import PG_BIN, DaemonProcess, free_port, wait_for
from tests.test_pg_operations import TABLES, config, confirmed_flush, current_lsn, execute, fetch, state


@pytest.fixture
def source_postgres() -> Iterator[tuple[str, Callable[[], None]]]:
    """A logical-replication PostgreSQL cluster of this test only: (dsn, restart with ``-m fast``)."""
    # Not under tmp_path: pytest's base folder is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="replicator-srcpg-"))
    root.chmod(0o755)
    data = root / "data"
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_owner:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        [*as_owner, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    ctl = [*as_owner, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log")]
    opts = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} -c fsync=off "
        "-c wal_level=logical -c max_replication_slots=4 -c max_wal_senders=4"
    )
    subprocess.run([*ctl, "-o", opts, "-w", "start"], check=True, capture_output=True)

    def restart() -> None:
        subprocess.run([*ctl, "-o", opts, "-m", "fast", "-w", "restart"], check=True, capture_output=True)

    try:
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres", restart
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


class TolerantLoad:
    """Small transactions on every table from a thread; a lost connection (the restart) ends it quietly.

    Inserted ids start at ``first_id`` so that loads before and after the restart never collide. A
    transaction cut off by the restart may or may not have committed: the test compares the target with
    the source as it is, so either is fine.
    """

    def __init__(self, dsn: str, *, seed: int, first_id: int) -> None:
        self.dsn, self.rng, self.next_id = dsn, random.Random(seed), first_id
        self.stop = threading.Event()
        self.transactions = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn = psycopg2.connect(self.dsn)
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    for _ in range(self.rng.randint(1, 4)):
                        t, k = self.rng.choice(TABLES), self.rng.randint(1, self.next_id)
                        op = self.rng.random()
                        if op < 0.4:
                            self.next_id += 1
                            cur.execute(
                                f"INSERT INTO public.{t} VALUES (%s, %s, %s)",
                                (self.next_id, self.rng.randint(0, 9999), f"n{self.next_id}"),
                            )
                        elif op < 0.85:
                            cur.execute(
                                f"UPDATE public.{t} SET v = v + 1, note = %s WHERE id = %s", (f"u{k}", k)
                            )
                        else:
                            cur.execute(f"DELETE FROM public.{t} WHERE id = %s", (k,))
                    conn.commit()
                    self.transactions += 1
                    time.sleep(0.005)
            conn.close()
        except BaseException as exc:
            self.error = exc

    def finish(self, *, cut_off: bool = False) -> None:
        """Stop; with ``cut_off`` the load may have ended on a lost connection, and nothing else."""
        self.stop.set()
        self.thread.join(timeout=30)
        if cut_off and isinstance(self.error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return
        assert self.error is None, self.error


def duplicate_keys(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    return {
        t: fetch(dsn, f"SELECT id, count(*) FROM public.{t} GROUP BY id HAVING count(*) > 1") for t in TABLES
    }


def test_the_daemon_reconnects_by_itself_when_the_source_postgres_restarts_mid_load(
    tmp_path: Path, source_postgres: tuple[str, Callable[[], None]], pg_dsn: str
) -> None:
    source, restart = source_postgres
    target = pg_dsn
    execute(
        source,
        *(f"CREATE TABLE public.{t} (id bigint PRIMARY KEY, v integer, note text)" for t in TABLES),
        *(
            f"INSERT INTO public.{t} SELECT g, g * 10, 'row ' || g FROM generate_series(1, 200) g"
            for t in TABLES
        ),
    )
    port = free_port()
    cfg, slot = config(tmp_path, source, target, port)
    d = DaemonProcess(cfg, port)
    try:
        d.wait_ready()
        wait_for(lambda: state(target) == state(source), 60, "initial copy")

        before = TolerantLoad(source, seed=11, first_id=10_000)
        wait_for(lambda: before.transactions > 40, 20, "load before the restart")
        restart()  # in the middle of the load, and of the daemon's streaming
        before.finish(cut_off=True)
        assert d.proc.poll() is None, "the daemon exited when its source went away"

        after = TolerantLoad(source, seed=12, first_id=20_000)
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
