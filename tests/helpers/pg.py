"""Helpers for the tests of the PostgreSQL source: SQL on a DSN, WAL positions and slots, and the in-process
rig of the source tests (``items`` and ``nopk`` replicated to DuckDB) with its ``source_db`` fixture."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg2

from replicator.config import BatchConfig, PipelineConfig
from replicator.pipeline import Pipeline
from replicator.schema import load_tables
from replicator.sources.postgres import PostgresSource
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from replicator.warehouses import DuckDBWarehouse

ROOT = Path(__file__).resolve().parents[2]


def dsn_params(dsn: str) -> dict[str, str]:
    """The ``key=value`` words of a libpq DSN."""
    return dict(p.split("=", 1) for p in dsn.split())


def execute(dsn: str, *sql: str) -> list[tuple[Any, ...]]:
    """Each statement in autocommit mode, one after the other; the rows of the last one that returns any."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    rows: list[tuple[Any, ...]] = []
    try:
        with conn.cursor() as cur:
            for s in sql:
                cur.execute(s)
                if cur.description:
                    rows = [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()
    return rows


def fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def with_dbname(dsn: str, name: str) -> str:
    """``dsn`` with its database replaced by ``name``."""
    return " ".join([*(p for p in dsn.split() if not p.startswith("dbname=")), f"dbname={name}"])


def create_database(admin_dsn: str, *, prefix: str = "t", template: str = "template1") -> str:
    """A new database with a unique name, copied from ``template``; its DSN.

    ``STRATEGY FILE_COPY`` copies the template's files (a few ms on this fsync-off server) instead of writing
    every page to the WAL (PostgreSQL 15's default, about 0.1 s, and megabytes of WAL that every logical
    walsender of every other test must read past)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    execute(admin_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    return with_dbname(admin_dsn, name)


def drop_database(admin_dsn: str, dsn: str) -> None:
    """Drop the database of ``dsn`` and its replication slots (which would keep it, and take one of the
    server's ``max_replication_slots``)."""
    name = dsn_params(dsn)["dbname"]
    if execute(admin_dsn, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        drop_slots(with_dbname(admin_dsn, name))
    execute(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_template(admin_dsn: str, *sql: str, prefix: str = "tpl") -> str:
    """A database holding what ``sql`` creates, to copy with ``create_database(template=...)`` (the set-up
    runs once, not once per test); its name. Nobody may stay connected to it."""
    dsn = create_database(admin_dsn, prefix=prefix)
    execute(dsn, *sql)
    return dsn_params(dsn)["dbname"]


class Databases:
    """Databases of one test on the shared server: ``new()`` makes one (copied from ``template``, by default
    an empty one) and the fixture drops them all, with their replication slots, when the test ends."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self._made: list[str] = []

    def new(self, *, prefix: str = "t", template: str = "template1") -> str:
        dsn = create_database(self.admin_dsn, prefix=prefix, template=template)
        self._made.append(dsn)
        return dsn

    def drop_all(self) -> None:
        while self._made:
            drop_database(self.admin_dsn, self._made.pop())


class Templates:
    """Template databases made once per test session (per xdist worker): ``get(*sql)`` is a database
    holding what ``sql`` creates, for ``Databases.new(template=...)``."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self._made: dict[tuple[str, ...], str] = {}

    def get(self, *sql: str) -> str:
        if sql not in self._made:
            self._made[sql] = make_template(self.admin_dsn, *sql)
        return self._made[sql]

    def drop_all(self) -> None:
        for name in self._made.values():
            execute(self.admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def current_lsn(dsn: str) -> int:
    """The end of everything committed so far, as a number (as ``parse_lsn`` reads ``X/Y``).

    The insert position, not ``pg_current_wal_lsn()``: with synchronous_commit = off (the test server) the
    write position can lie before a commit that has returned, so "the slot confirmed it" proved nothing
    (the PostgreSQL fuzzer's catch-up stopped a daemon before it had streamed the last update). A record
    never ends inside a page header, so right after one the page's start is the end."""
    lsn = int(fetch(dsn, "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0][0])
    return lsn - lsn % 8192 if lsn % 8192 <= 40 else lsn


def confirmed_flush(dsn: str, slot: str) -> int:
    """The slot's confirmed position as a number; 0 when it has none (or no such slot)."""
    rows = fetch(
        dsn,
        f"SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'",
    )
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def drop_slots(dsn: str) -> None:
    """Drop the replication slots of the database of ``dsn`` (a database with a logical slot cannot be
    dropped), after waiting up to 10 s for their walsenders to let go of them."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        dbname = dsn_params(dsn)["dbname"]
        for _ in range(100):
            cur.execute("SELECT slot_name, active FROM pg_replication_slots WHERE database = %s", (dbname,))
            rows = cur.fetchall()
            if not any(active for _, active in rows):
                break
            time.sleep(0.1)
        for name, _ in rows:
            cur.execute("SELECT pg_drop_replication_slot(%s)", (name,))
    conn.close()


def catch_up(pipeline: Pipeline, source: PostgresSource, dsn: str) -> None:
    """Run until the slot confirmed everything the source had written when called (the server is shared:
    other databases' WAL may take the walsender a while)."""
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        row = cur.fetchone()
    conn.close()
    assert row is not None
    goal, deadline = int(row[0]), time.monotonic() + 120
    pipeline.run(threading.Event(), once=True)
    while source.stream.flush_lsn < goal:
        assert time.monotonic() < deadline, "the source did not catch up within 120 s"
        pipeline.run(threading.Event(), once=True)


# -- the source tests' rig: items and nopk, replicated in-process to DuckDB ----------------------------------

ITEMS = """schema = "public"
name = "items"
primary_key = ["id"]
[columns]
id = "bigint not null"
a = "integer"
b = "text"
c = "timestamptz"
d = "numeric(12,2)"
"""
NOPK = """schema = "public"
name = "nopk"
primary_key = ["x", "y"]
[columns]
x = "integer"
y = "text"
"""
SOURCE_DDL = """
CREATE TABLE items (id bigint PRIMARY KEY, a int, b text, c timestamptz, d numeric(12,2));
CREATE TABLE nopk (x int, y text);
ALTER TABLE nopk REPLICA IDENTITY FULL;
"""
ITEM_COLS = "id, a, b, c, d"


def write_schemas(tmp: Path) -> Path:
    """``tmp/schemas`` with the schema files of both tables."""
    folder = tmp / "schemas" / "tables"
    folder.mkdir(parents=True)
    (folder / "items.toml").write_text(ITEMS)
    (folder / "nopk.toml").write_text(NOPK)
    return tmp / "schemas"


def slot_of(dsn: str) -> str:
    """The slot of a ``source_db`` DSN."""
    return dsn_params(dsn)["application_name"]


def confirmed_lsn(dsn: str) -> int:
    """The confirmed position of the slot of a ``source_db`` DSN."""
    return confirmed_flush(dsn, slot_of(dsn))


class Rig:
    """A source, pipeline and DuckDB target built in-process, as app.build would."""

    def __init__(self, dsn: str, tmp: Path, *, max_rows: int = 5_000) -> None:
        self.dsn, self.tmp = dsn, tmp
        folder = tmp / "schemas"
        self.schemas = load_tables(folder if folder.exists() else write_schemas(tmp))
        self.staging = LocalStore(tmp / "staging")
        self.source = PostgresSource(
            dsn, self.schemas, state=self.staging, slot=slot_of(dsn), publication="pub", idle_seconds=0.3
        )
        self.warehouse = DuckDBWarehouse(str(tmp / "wh.duckdb"))
        self.pipeline = Pipeline(
            source=self.source,
            stager=Stager(self.staging, Quarantine(self.staging)),
            warehouse=self.warehouse,
            schemas=self.schemas,
            batch=BatchConfig(max_rows=max_rows, max_age_seconds=0.2),
            settings=PipelineConfig(poll_interval_seconds=0.05),
        )

    def run_once(self) -> None:
        """Replicate until the slot has confirmed everything the source had written when called.

        The walsender may need a while to decode other databases' WAL (the server is shared), so a single
        idle round proves nothing; the confirmed position does."""
        target = current_lsn(self.dsn)
        deadline = time.monotonic() + 120
        self.pipeline.run(threading.Event(), once=True)
        while self.source.stream.flush_lsn < target:
            assert time.monotonic() < deadline, "the source did not catch up within 120 s"
            self.pipeline.run(threading.Event(), once=True)

    def close(self) -> None:
        self.source.close()
        self.warehouse.close()


def source_rows(dsn: str, table: str, cols: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute(f"SELECT {cols} FROM {table}")
        rows = cur.fetchall()
    conn.close()
    return sorted(rows, key=repr)


def target_rows(path: Path, table: str, cols: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return sorted(con.execute(f"SELECT {cols} FROM {table}").fetchall(), key=repr)
    finally:
        con.close()


def _canonical(value: Any) -> str:
    # psycopg2 and DuckDB return equal timestamps with different tzinfo objects: compare instants.
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return repr(value)


def checksum(rows: list[tuple[Any, ...]]) -> str:
    """Order-independent digest of every row (sorted canonical text)."""
    text = sorted("\x1f".join(_canonical(v) for v in row) for row in rows)
    return hashlib.sha256("\n".join(text).encode()).hexdigest()


RUN_CONFIG = """schemas = "{schemas}"
[source]
kind = "postgres"
[source.postgres]
host = "{host}"
port = {port}
user = "{user}"
database = "{dbname}"
sslmode = "disable"
slot_name = "{slot}"
publication_name = "pub"
[staging]
path = "{tmp}/staging"
[warehouse]
kind = "duckdb"
path = "{tmp}/wh.duckdb"
[batch]
max_rows = 2000
max_age_seconds = 0.2
[pipeline]
poll_interval_seconds = 0.1
merge_interval_seconds = 0.3
"""


def write_run_config(tmp: Path, dsn: str, schemas: Path) -> Path:
    """``tmp/replicator.toml`` for ``replicator run``: this source (slot named by ``slot_of``), staging in
    ``tmp/staging``, DuckDB at ``tmp/wh.duckdb``, small batches."""
    parts = dsn_params(dsn)
    config = tmp / "replicator.toml"
    config.write_text(
        RUN_CONFIG.format(
            schemas=schemas,
            tmp=tmp,
            slot=slot_of(dsn),
            **{k: parts.get(k, "") for k in ("host", "port", "user", "dbname")},
        )
    )
    return config


def run_until_caught_up(config: Path, dsn: str, *, seconds: float = 120) -> None:
    """``replicator run --once`` until the slot confirmed everything written so far (the shared walsender
    may lag, so one clean run proves nothing)."""
    target = current_lsn(dsn)
    deadline = time.monotonic() + seconds
    while True:
        done = subprocess.run(
            [sys.executable, "-m", "replicator", "run", "--once", "-c", str(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=seconds,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        if confirmed_lsn(dsn) >= target:
            return
        assert time.monotonic() < deadline, f"the replicator did not catch up within {seconds:.0f} s"


def write_load(
    dsn: str, stop: threading.Event, seed: int, sql: str, args: Callable[[random.Random], tuple[Any, ...]]
) -> None:
    """Run ``sql`` (one small transaction) with ``args(rnd)`` over and over until ``stop``: a concurrent
    write load for a thread."""
    rnd = random.Random(seed)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        while not stop.is_set():
            cur.execute(sql, args(rnd))
    conn.close()
