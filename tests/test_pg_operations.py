"""Operations on the PostgreSQL source with real processes: the daemon in a child process, a real source
PostgreSQL under a write load from a thread, and a real PostgreSQL target.

- Pausing one table freezes its target while the others keep up, and the slot's confirmed position keeps
  advancing (capture and staging of the paused table go on); resume catches it up to equality.
- ``replicator resync TABLE`` under the same load repairs a damaged target table through a fresh snapshot,
  with no gap and no double effect at the hand-off to streaming, and leaves the other tables alone.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.support import run_cli
from tests.test_operations import TOKEN, DaemonProcess, free_port, http, tables_of, wait_for

TABLES = ("alpha", "beta", "gamma")
PAUSED = "beta"


def _params(dsn: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in dsn.split())


def execute(dsn: str, *sql: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for s in sql:
            cur.execute(s)
    conn.close()


def fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def state(dsn: str, tables: tuple[str, ...] = TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of each table, in key order: compared whole."""
    return {t: fetch(dsn, f"SELECT id, v, note FROM public.{t} ORDER BY id") for t in tables}


@pytest.fixture
def target_dsn(pg_admin_dsn: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    execute(pg_admin_dsn, f'CREATE DATABASE "{name}"')
    yield " ".join(f"{k}={name if k == 'dbname' else v}" for k, v in _params(pg_admin_dsn).items())
    execute(pg_admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def source_dsn(pg_dsn: str) -> Iterator[str]:
    """The fresh database with three tables; its replication slots are dropped afterwards (a database
    with a logical slot cannot be dropped)."""
    execute(
        pg_dsn,
        *(f"CREATE TABLE public.{t} (id bigint PRIMARY KEY, v integer, note text)" for t in TABLES),
        *(
            f"INSERT INTO public.{t} SELECT g, g * 10, 'row ' || g FROM generate_series(1, 200) g"
            for t in TABLES
        ),
    )
    yield pg_dsn
    dbname = _params(pg_dsn)["dbname"]
    for _ in range(100):
        rows = fetch(
            pg_dsn, f"SELECT slot_name, active FROM pg_replication_slots WHERE database = '{dbname}'"
        )
        if not any(active for _, active in rows):
            break
        time.sleep(0.1)
    for name, _ in rows:
        execute(pg_dsn, f"SELECT pg_drop_replication_slot('{name}')")


def config(tmp: Path, source: str, target: str, port: int) -> tuple[Path, str]:
    folder = tmp / "schemas" / "tables"
    folder.mkdir(parents=True)
    for t in TABLES:
        (folder / f"{t}.toml").write_text(
            f'schema = "public"\nname = "{t}"\nprimary_key = ["id"]\n'
            '[columns]\nid = "bigint not null"\nv = "integer"\nnote = "text"\n'
        )
    src, dst = _params(source), _params(target)
    slot = f"op_{uuid.uuid4().hex[:10]}"
    path = tmp / "r.toml"
    path.write_text(
        f"""schemas = "{tmp / "schemas"}"
[source]
kind = "postgres"
[source.postgres]
host = "{src["host"]}"
port = {src["port"]}
database = "{src["dbname"]}"
user = "{src["user"]}"
sslmode = "disable"
slot_name = "{slot}"
publication_name = "{slot}"
[staging]
path = "{tmp / "stage"}"
[warehouse]
kind = "postgres"
host = "{dst["host"]}"
port = {dst["port"]}
database = "{dst["dbname"]}"
user = "{dst["user"]}"
sslmode = "disable"
[batch]
max_rows = 200
max_age_seconds = 0.3
[pipeline]
poll_interval_seconds = 0.2
merge_interval_seconds = 0.2
shutdown_grace_seconds = 10
[http]
host = "127.0.0.1"
port = {port}
[lease]
ttl_seconds = 4
renew_interval_seconds = 1
[log]
level = "info"
format = "json"
"""
    )
    return path, slot


class Load:
    """Small transactions of inserts, updates and deletes on every table, from a thread, until stopped."""

    def __init__(self, dsn: str, *, seed: int) -> None:
        self.dsn, self.rng = dsn, random.Random(seed)
        self.stop = threading.Event()
        self.transactions = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn = psycopg2.connect(self.dsn)
            next_id = 1000
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    for _ in range(self.rng.randint(1, 4)):
                        t, k = self.rng.choice(TABLES), self.rng.randint(1, next_id)
                        op = self.rng.random()
                        if op < 0.4:
                            next_id += 1
                            cur.execute(
                                f"INSERT INTO public.{t} VALUES (%s, %s, %s)",
                                (next_id, self.rng.randint(0, 9999), f"n{next_id}"),
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

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert self.error is None, self.error


def confirmed_flush(dsn: str, slot: str) -> int:
    rows = fetch(
        dsn,
        f"SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'",
    )
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def current_lsn(dsn: str) -> int:
    return int(fetch(dsn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0])


def test_pausing_a_table_freezes_its_target_while_the_others_and_the_slot_keep_moving_and_resume_catches_up(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    port = free_port()
    cfg, slot = config(tmp_path, source_dsn, target_dsn, port)
    d = DaemonProcess(cfg, port)
    load: Load | None = None
    try:
        d.wait_ready()
        wait_for(lambda: state(target_dsn) == state(source_dsn), 60, "initial copy")
        load = Load(source_dsn, seed=71)
        code, row = http(
            "POST", f"{d.url}/tables/public.{PAUSED}/pause", token=TOKEN, body={"reason": "test"}
        )
        assert code == 200 and row["state"] == "paused", row
        frozen = state(target_dsn, (PAUSED,))
        at_pause = current_lsn(source_dsn)

        # Under the load: the slot confirms past the position at the pause (the paused table's changes
        # are in those transactions, so they were captured and staged), and its backlog grows.
        wait_for(lambda: confirmed_flush(source_dsn, slot) > at_pause, 40, "the slot advances while paused")
        wait_for(
            lambda: tables_of(d.url)[f"public.{PAUSED}"]["backlog_batches"] > 0, 30, "paused table staged"
        )
        load.finish()
        at_stop = current_lsn(source_dsn)
        others = tuple(t for t in TABLES if t != PAUSED)
        wait_for(lambda: state(target_dsn, others) == state(source_dsn, others), 60, "the others keep up")
        wait_for(lambda: confirmed_flush(source_dsn, slot) >= at_stop, 40, "the slot confirms all the load")
        assert state(target_dsn, (PAUSED,)) == frozen, "a paused table's target changed"
        assert state(source_dsn, (PAUSED,)) != frozen, "the test needs changes to the paused table"
        assert load.transactions > 50

        code, row = http("POST", f"{d.url}/tables/public.{PAUSED}/resume", token=TOKEN)
        assert code == 200 and row["state"] == "active", row
        wait_for(lambda: state(target_dsn) == state(source_dsn), 60, "the paused table catches up")
    finally:
        if load is not None:
            load.stop.set()
        assert d.terminate() == 0
    assert state(target_dsn) == state(source_dsn)


def test_resync_under_a_write_load_repairs_a_damaged_table_and_leaves_the_others_alone(
    tmp_path: Path, source_dsn: str, target_dsn: str
) -> None:
    port = free_port()
    cfg, _slot = config(tmp_path, source_dsn, target_dsn, port)
    d = DaemonProcess(cfg, port)
    load: Load | None = None
    try:
        d.wait_ready()
        wait_for(lambda: state(target_dsn) == state(source_dsn), 60, "initial copy")
        # Damage the target on purpose: rows lost, a row changed, a row that never existed.
        execute(
            target_dsn,
            f"DELETE FROM public.{PAUSED} WHERE id BETWEEN 10 AND 40",
            f"UPDATE public.{PAUSED} SET note = 'damaged' WHERE id = 50",
            f"INSERT INTO public.{PAUSED} (id, v, note) VALUES (999999, 0, 'stray')",
        )
        load = Load(source_dsn, seed=72)
        time.sleep(1.0)  # changes of the table streaming before, during and after the copy
        out = run_cli("resync", f"public.{PAUSED}", "--reason", "damaged", "-c", str(cfg))
        assert out.returncode == 0, out.stderr
        wait_for(lambda: bool(d.events("table_recopied")), 60, lambda: d.log.read_text()[-3000:])
        time.sleep(1.0)
        load.finish()
        wait_for(lambda: tables_of(d.url)[f"public.{PAUSED}"]["state"] == "active", 60, "the resync finishes")
        wait_for(lambda: state(target_dsn) == state(source_dsn), 60, lambda: d.log.read_text()[-3000:])
        recopied = d.events("table_recopied")
        assert [e["table"] for e in recopied] == [f"public.{PAUSED}"], "only the resynced table is copied"
    finally:
        if load is not None:
            load.stop.set()
        assert d.terminate() == 0
    assert state(target_dsn) == state(source_dsn)
