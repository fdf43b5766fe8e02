"""Commit-to-queryable latency, PostgreSQL source, default settings (issue 16).

``pgbench -R`` inserts rows at a steady rate in small autocommit transactions (one row each up to 1,000
rows/s, then as many rows per transaction as keep it at 1,000 transactions/s); each row records its
``clock_timestamp()``, which is its commit time to within the transaction's length. A poller reads the
target every 50 ms and notes when each id first shows; latency = that moment minus the row's time. The
daemon runs in this process (``Daemon.run``, the production loop) so that the DuckDB target can be polled
through the daemon's own connection (an embedded file has one writer process); the PostgreSQL target is
polled through a connection of its own. Prints p50/p95/p99/max per rate and target.

``REPLICATOR_BENCH_LATENCY_RATES`` (default ``200,2000,10000``), ``REPLICATOR_BENCH_LATENCY_SECONDS``
(default 20), ``REPLICATOR_BENCH_LATENCY_TARGETS`` (default ``duckdb,postgres``),
``REPLICATOR_BENCH_LATENCY_EXTRA`` (TOML appended to the config, e.g. to compare settings).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from prometheus_client import REGISTRY

from replicator import config as config_mod
from replicator.ops import Daemon
from tests.helpers.pg import dsn_params, execute, fetch

pytestmark = pytest.mark.benchmark

RATES = [int(r) for r in os.environ.get("REPLICATOR_BENCH_LATENCY_RATES", "200,2000,10000").split(",")]
SECONDS = float(os.environ.get("REPLICATOR_BENCH_LATENCY_SECONDS", "20"))
TARGETS = os.environ.get("REPLICATOR_BENCH_LATENCY_TARGETS", "duckdb,postgres").split(",")
EXTRA = os.environ.get("REPLICATOR_BENCH_LATENCY_EXTRA", "")
POLL = 0.05

DDL = (
    "CREATE TABLE lat (id bigserial PRIMARY KEY, v integer, t timestamptz NOT NULL DEFAULT clock_timestamp())"
)
TABLE_TOML = (
    'schema = "public"\nname = "lat"\nprimary_key = ["id"]\n'
    '[columns]\nid = "bigint not null"\nv = "integer"\nt = "timestamptz not null"\n'
)


def _pgbench() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    for path in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True):
        return str(path)
    pytest.fail("pgbench not found (postgresql-client / the server packages install it)")


def _config(tmp: Path, source: str, target: str | None, slot: str) -> Path:
    folder = tmp / "schemas" / "tables"
    folder.mkdir(parents=True)
    (folder / "lat.toml").write_text(TABLE_TOML)
    src = dsn_params(source)
    if target is None:
        warehouse = f'kind = "duckdb"\npath = "{tmp / "w.duckdb"}"'
    else:
        dst = dsn_params(target)
        warehouse = (
            f'kind = "postgres"\nhost = "{dst["host"]}"\nport = {dst["port"]}\n'
            f'database = "{dst["dbname"]}"\nuser = "{dst["user"]}"\nsslmode = "disable"'
        )
    path = tmp / "r.toml"
    path.write_text(
        f'schemas = "{tmp / "schemas"}"\n[source]\nkind = "postgres"\n[source.postgres]\n'
        f'host = "{src["host"]}"\nport = {src["port"]}\ndatabase = "{src["dbname"]}"\n'
        f'user = "{src["user"]}"\nsslmode = "disable"\nslot_name = "{slot}"\npublication_name = "{slot}"\n'
        f'[staging]\npath = "{tmp / "stage"}"\n[warehouse]\n{warehouse}\n[http]\nport = 0\n{EXTRA}\n'
    )
    return path


@contextmanager
def _daemon(cfg_path: Path) -> Iterator[Daemon]:
    cfg = config_mod.load(cfg_path, environ={})
    stop = threading.Event()
    daemon = Daemon(cfg, stop)
    thread = threading.Thread(target=daemon.run, kwargs={"once": False}, daemon=True)
    thread.start()
    try:
        yield daemon
    finally:
        stop.set()
        thread.join(60)


def _poller(read_ids: Callable[[int], list[int]], stop: threading.Event, seen: dict[int, float]) -> None:
    """Every POLL seconds, the ids above the lowest not yet seen, each noted at its first sighting."""
    low = 0
    while not stop.is_set():
        started = time.time()
        try:
            ids = read_ids(low)
        except Exception:
            ids = []
        for i in ids:
            seen.setdefault(i, started)
        while low + 1 in seen:
            low += 1
        stop.wait(max(0.0, POLL - (time.time() - started)))


def _sums() -> dict[str, tuple[float, float]]:
    """(sum, count) of the stage and merge duration histograms of this process."""
    out = {}
    for name in ("replicator_stage_duration_seconds", "replicator_merge_duration_seconds"):
        total = REGISTRY.get_sample_value(f"{name}_sum", {"table": "public.lat"}) or 0.0
        count = REGISTRY.get_sample_value(f"{name}_count", {"table": "public.lat"}) or 0.0
        out[name.split("_")[1]] = (total, count)
    return out


def _run(source: str, tmp: Path, target: str | None, rate: int) -> dict[str, float]:
    before = _sums()
    slot = f"lat_{uuid.uuid4().hex[:10]}"
    execute(source, "DROP TABLE IF EXISTS lat")
    execute(source, DDL)
    path = _config(tmp, source, target, slot)
    seen: dict[int, float] = {}
    stop = threading.Event()
    with _daemon(path) as daemon:
        deadline = time.monotonic() + 60
        while daemon.phase != "active" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.phase == "active", daemon.phase
        if target is None:
            term = daemon._active
            assert term is not None
            cursor = term.app.warehouse.cursor()  # type: ignore[attr-defined]

            def read_ids(low: int) -> list[int]:
                return [
                    r[0] for r in cursor.execute("SELECT id FROM public.lat WHERE id > ?", [low]).fetchall()
                ]
        else:
            conn = psycopg2.connect(target)
            conn.autocommit = True

            def read_ids(low: int) -> list[int]:
                with conn.cursor() as cur:
                    cur.execute("SELECT id FROM public.lat WHERE id > %s", (low,))
                    return [r[0] for r in cur.fetchall()]

        poller = threading.Thread(target=_poller, args=(read_ids, stop, seen), daemon=True)
        poller.start()
        per_txn = max(1, rate // 1000)
        script = tmp / "insert.sql"
        script.write_text(f"INSERT INTO lat (v) SELECT g FROM generate_series(1, {per_txn}) g;\n")
        params = dsn_params(source)
        env = {**os.environ, "PGPASSWORD": params.get("password", "")}
        subprocess.run(
            [_pgbench(), "-n", "-f", str(script), "-R", str(rate // per_txn), "-T", str(int(SECONDS)),
             "-c", "2", "-j", "2", "-h", params["host"], "-p", str(params["port"]), "-U", params["user"],
             params["dbname"]],
            check=True, capture_output=True, env=env,
        )  # fmt: skip
        rows = fetch(source, "SELECT id, extract(epoch FROM t) FROM lat ORDER BY id")
        deadline = time.monotonic() + 30
        while len(seen) < len(rows) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        poller.join(5)
    missing = [i for i, _ in rows if i not in seen]
    assert not missing, f"{len(missing)} rows never showed in the target"
    lat = sorted(seen[i] - float(t) for i, t in rows)
    q = statistics.quantiles(lat, n=100)
    spent = {}
    for key, (total, count) in _sums().items():
        runs = count - before[key][1]
        spent[key] = (total - before[key][0]) / runs if runs else 0.0
        spent[f"{key}_n"] = runs
    return {"rows": len(lat), "p50": q[49], "p95": q[94], "p99": q[98], "max": lat[-1], **spent}


def _database(admin: str, name: str) -> str:
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    params = dsn_params(admin)
    params["dbname"] = name
    return " ".join(f"{k}={v}" for k, v in params.items())


def test_commit_to_queryable_latency(pg_admin_dsn: str, tmp_path: Path) -> None:
    results: list[tuple[str, int, dict[str, Any]]] = []
    for rate in RATES:
        for target_kind in TARGETS:
            tag = uuid.uuid4().hex[:8]
            source = _database(pg_admin_dsn, f"lat_src_{tag}")
            target = _database(pg_admin_dsn, f"lat_dst_{tag}") if target_kind == "postgres" else None
            tmp = tmp_path / f"{target_kind}_{rate}"
            tmp.mkdir()
            try:
                figures = _run(source, tmp, target, rate)
            finally:
                conn = psycopg2.connect(pg_admin_dsn)
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                        " WHERE NOT active AND slot_name LIKE 'lat\\_%'"
                    )
                    for db in [f"lat_src_{tag}", f"lat_dst_{tag}"]:
                        cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                conn.close()
            results.append((target_kind, rate, figures))
            print(
                f"\nlatency {datetime.now():%H:%M:%S} target={target_kind} rate={rate}/s"
                f" rows={figures['rows']}"
                f" p50={figures['p50']:.3f}s p95={figures['p95']:.3f}s p99={figures['p99']:.3f}s"
                f" max={figures['max']:.3f}s load={os.getloadavg()[0]:.1f}; per batch: stage"
                f" {figures['stage']:.3f}s, merge {figures['merge']:.3f}s ({figures['merge_n']:.0f} merges)"
            )
    assert results
