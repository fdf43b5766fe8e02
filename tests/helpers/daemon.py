"""Helpers for the tests that run ``replicator run`` as a child process: a DMS feed released a flush at a
time, the daemon's config, the process itself and its admin API, a PostgreSQL cluster of one test only (to
stop and restart under a daemon), and a PostgreSQL source of three small tables under a write load."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2

from replicator.demo import feed as demo
from tests.helpers.pg import dsn_params, execute, fetch
from tests.helpers.ports import free_port
from tests.helpers.support import ROOT, expected_state

TOKEN = "op-token-7f3a9c-" + "5e1d" * 8  # a test secret (40 chars): asserted never to show up in logs
PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Feed:
    """A full DMS feed in ``full/``; ``release(n)`` makes its next ``n`` CDC flushes appear in ``live/``."""

    def __init__(self, root: Path, *, seed: int, patients: int = 40, flushes: int = 6, changes: int = 40):
        self.full, self.live = root / "full", root / "live"
        demo.generate(self.full, seed=seed, patients=patients, cdc_files=flushes, changes_per_file=changes)
        files = sorted(p.relative_to(self.full) for p in self.full.rglob("*") if p.is_file())
        self._loads = [f for f in files if f.name.startswith("LOAD")]
        by_flush: dict[str, list[Path]] = {}
        for f in files:
            if not f.name.startswith("LOAD"):
                by_flush.setdefault(f.name, []).append(f)
        self._flushes = [by_flush[k] for k in sorted(by_flush)]
        self.released = 0
        for f in self._loads:
            self._put(f)

    @property
    def flushes(self) -> int:
        return len(self._flushes)

    def release(self, n: int) -> None:
        for group in self._flushes[self.released : self.released + n]:
            for f in group:
                self._put(f)
        self.released = min(self.flushes, self.released + n)

    def _put(self, rel: Path) -> None:
        dest = self.live / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(".tmp-" + dest.name)  # the local store does not list .tmp- files
        shutil.copyfile(self.full / rel, tmp)
        os.replace(tmp, dest)

    def expected(self) -> dict[str, dict[Any, Any]]:
        return expected_state(self.live)


def _daemon_settings(port: int, max_rows: int) -> str:
    """The settings every test daemon has: small batches, quick rounds, a grace period of 10 s, its admin API
    on ``port``, a short lease and JSON logs."""
    return f"""[batch]
max_rows = {max_rows}
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


def daemon_config(
    path: Path, *, source: Path, port: int, max_rows: int = 30, extra: str = "", duckdb: str = "wh.duckdb"
) -> Path:
    path.write_text(
        f"""schemas = "{ROOT / "schemas"}"
[source]
path = "{source}"
[source.dms]
timestamp_column_name = "dms_commit_ts"
[staging]
path = "{path.parent / "stage"}"
[warehouse]
kind = "duckdb"
path = "{path.parent / duckdb}"
{_daemon_settings(port, max_rows)}{extra}"""
    )
    return path


class DaemonProcess:
    """``replicator run`` in a child process with its log in a file."""

    def __init__(self, cfg: Path, port: int, env: dict[str, str] | None = None, name: str = "daemon"):
        self.port = port
        self.log = cfg.parent / f"{name}.log"
        self._log_file = self.log.open("w")
        full_env = {**os.environ, "REPLICATOR__HTTP__ADMIN_TOKEN": TOKEN, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "-c", str(cfg)],
            stderr=self._log_file, stdout=subprocess.DEVNULL, env=full_env, cwd=ROOT,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            if f'"event": "{name}"' in line:
                out.append(json.loads(line))
        return out

    def ready(self) -> bool:
        if self.proc.poll() is not None:  # not another test's daemon answering on a port it lost
            tail = self.log.read_text()[-3000:]
            raise AssertionError(f"daemon exited {self.proc.returncode}; log:\n{tail}")
        return http("GET", f"{self.url}/readyz")[0] == 200

    def wait_ready(self, timeout: float = 40) -> None:
        wait_for(self.ready, timeout, lambda: f"daemon not ready; log:\n{self.log.read_text()[-3000:]}")

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        self._log_file.close()
        return rc

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._log_file.close()


def http(method: str, url: str, *, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            code: int = r.status
    except urllib.error.HTTPError as exc:
        raw, code = exc.read(), exc.code
    except OSError as exc:  # no answer: the reason (refused, timed out) is the document
        return 0, f"{type(exc).__name__}: {exc}"
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, raw.decode()


def wait_for(check: Callable[[], bool], timeout: float, message: Callable[[], str] | str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(message() if callable(message) else message or "timed out")


def tables_of(url: str) -> dict[str, dict[str, Any]]:
    code, doc = http("GET", f"{url}/tables", token=TOKEN)
    assert code == 200, f"GET /tables answered {code or 'nothing'}: {doc}"
    return {r["table"]: r for r in doc["tables"]}


def caught_up(url: str) -> bool:
    rows = tables_of(url).values()
    return all(r["backlog_batches"] == 0 and r["error"] is None for r in rows if r["state"] == "active")


def replicate_until_equal(cfg: Path, port: int, source: str, target: str) -> None:
    """A daemon on ``cfg`` until the three tables of ``target`` equal ``source``'s, then stopped (exit 0)."""
    daemon = DaemonProcess(cfg, port)
    try:
        daemon.wait_ready()
        wait_for(lambda: state(target) == state(source), 60, lambda: daemon.log.read_text()[-3000:])
    finally:
        assert daemon.terminate() == 0


class PrivateCluster:
    """A PostgreSQL cluster of one test only, never the shared server: initialised here, started by
    ``start``. ``settings`` are extra ``name=value`` server settings; ``close`` stops it at once and removes
    its files."""

    def __init__(self, prefix: str, *settings: str) -> None:
        # Not under tmp_path: pytest's base folder is private to root, and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.root.chmod(0o755)
        data = self.root / "data"
        as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_owner:
            shutil.chown(self.root, "postgres", "postgres")
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]
        subprocess.run([*as_owner, *initdb], check=True, capture_output=True)
        port = free_port()
        self.dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        self._ctl = [*as_owner, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log")]
        base = ["listen_addresses=127.0.0.1", f"unix_socket_directories={self.root}", "fsync=off"]
        self._opts = " ".join([f"-p {port}", *(f"-c {s}" for s in (*base, *settings))])

    def start(self) -> None:
        subprocess.run([*self._ctl, "-o", self._opts, "-w", "start"], check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([*self._ctl, "-m", "fast", "-w", "stop"], check=True, capture_output=True)

    def restart(self) -> None:
        subprocess.run(
            [*self._ctl, "-o", self._opts, "-m", "fast", "-w", "restart"], check=True, capture_output=True
        )

    def close(self) -> None:
        subprocess.run([*self._ctl, "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


# -- a PostgreSQL source of three tables ---------------------------------------------------------------------

TABLES = ("alpha", "beta", "gamma")


TABLES_SQL = (
    *(f"CREATE TABLE public.{t} (id bigint PRIMARY KEY, v integer, note text)" for t in TABLES),
    *(f"INSERT INTO public.{t} SELECT g, g * 10, 'row ' || g FROM generate_series(1, 200) g" for t in TABLES),
)


def create_tables(dsn: str) -> None:
    """The three tables, 200 rows each, in the database of ``dsn`` (``source_dsn`` copies them from a
    template instead)."""
    execute(dsn, *TABLES_SQL)


def state(dsn: str, tables: tuple[str, ...] = TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of each table, in key order: compared whole."""
    return {t: fetch(dsn, f"SELECT id, v, note FROM public.{t} ORDER BY id") for t in tables}


def pg_connection(dsn: str) -> str:
    """The ``host``..``sslmode`` lines of a ``[source.postgres]`` or ``[warehouse]`` section for ``dsn``."""
    p = dsn_params(dsn)
    return (
        f'host = "{p["host"]}"\nport = {p["port"]}\ndatabase = "{p["dbname"]}"\nuser = "{p["user"]}"\n'
        'sslmode = "disable"'
    )


def pg_source_config(tmp: Path, source: str, target: str, port: int) -> tuple[Path, str]:
    """``tmp/r.toml`` replicating the three tables from ``source`` to the PostgreSQL ``target`` with its
    admin API on ``port``, and the name of its fresh slot (also its publication's)."""
    folder = tmp / "schemas" / "tables"
    folder.mkdir(parents=True)
    for t in TABLES:
        (folder / f"{t}.toml").write_text(
            f'schema = "public"\nname = "{t}"\nprimary_key = ["id"]\n'
            '[columns]\nid = "bigint not null"\nv = "integer"\nnote = "text"\n'
        )
    slot = f"op_{uuid.uuid4().hex[:10]}"
    path = tmp / "r.toml"
    path.write_text(
        f"""schemas = "{tmp / "schemas"}"
[source]
kind = "postgres"
[source.postgres]
{pg_connection(source)}
slot_name = "{slot}"
publication_name = "{slot}"
[staging]
path = "{tmp / "stage"}"
[warehouse]
kind = "postgres"
{pg_connection(target)}
{_daemon_settings(port, 200)}"""
    )
    return path, slot


class Load:
    """Small transactions of inserts, updates and deletes on every table, from a thread, until stopped.

    Inserted ids follow ``first_id``, so that loads one after the other never collide.
    """

    def __init__(self, dsn: str, *, seed: int, first_id: int = 1000) -> None:
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
        """Stop; with ``cut_off`` the load may have ended on a lost connection (a restarted server), and
        nothing else. A transaction cut off that way may or may not have committed."""
        self.stop.set()
        self.thread.join(timeout=30)
        if cut_off and isinstance(self.error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return
        assert self.error is None, self.error
