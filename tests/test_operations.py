"""Operations with real processes: pause/resume/resync, two daemons on one config, SIGTERM mid-batch, and a
target PostgreSQL restarted under a running daemon.

The DMS feed is generated whole into ``full/`` and released into the daemon's folder a flush at a time by
atomic renames, the way S3 makes a DMS file appear at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from replicator import demo
from tests.support import (
    ROOT,
    assert_same_state,
    duckdb_state,
    expected_state,
    pg_env,
    postgres_state,
    run_cli,
)

TOKEN = "op-token-7f3a9c"  # a test secret: asserted never to show up in logs
PG_BIN = Path("/usr/lib/postgresql/15/bin")


# -- helpers shared by the operations test modules ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
[batch]
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
{extra}"""
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
    except OSError:
        return 0, None
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
    assert code == 200, doc
    return {r["table"]: r for r in doc["tables"]}


def caught_up(url: str) -> bool:
    rows = tables_of(url).values()
    return all(r["backlog_batches"] == 0 and r["error"] is None for r in rows if r["state"] == "active")


def only(state: dict[str, dict[Any, Any]], names: set[str]) -> dict[str, dict[Any, Any]]:
    return {k: v for k, v in state.items() if k in names}


OTHERS = {"practices", "patients", "payment_plans", "insurance_claims"}


# -- pause / resume / resync without a daemon (CLI writes the control table itself) -----------------------


def test_a_table_paused_from_the_cli_is_staged_but_not_merged_and_resume_merges_its_backlog(
    tmp_path: Path,
) -> None:
    feed = Feed(tmp_path, seed=31)
    feed.release(feed.flushes)
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)

    paused = run_cli("pause", "dbo.payments", "--reason", "bad migration", "-c", str(cfg))
    assert paused.returncode == 0, paused.stderr
    listed = run_cli("tables", "-c", str(cfg), "--json")
    rows = {r["table"]: r for r in json.loads(listed.stdout)["tables"]}
    assert rows["dbo.payments"]["state"] == "paused"
    assert rows["dbo.payments"]["reason"] == "bad migration"
    assert rows["dbo.payments"]["changed_by"].startswith("cli:")
    assert rows["dbo.payments"]["since"] is not None
    assert rows["dbo.patients"]["state"] == "active"

    first = run_cli("run", "-c", str(cfg), "--once")
    assert first.returncode == 0, first.stderr
    expected = feed.expected()
    state = duckdb_state(tmp_path / "wh.duckdb")
    assert state["payments"] == {}, "a paused table was merged"
    assert_same_state(only(state, OTHERS), only(expected, OTHERS))
    staged = list((tmp_path / "stage" / "batches" / "dbo.payments").glob("*.json"))
    assert staged, "capture and staging of the paused table must go on"

    # The state survives the restart above and is shown by status; resume merges the backlog in order.
    status = run_cli("status", "-c", str(cfg))
    assert "paused" in status.stdout and "bad migration" in status.stdout
    resumed = run_cli("resume", "dbo.payments", "-c", str(cfg))
    assert resumed.returncode == 0, resumed.stderr
    second = run_cli("run", "-c", str(cfg), "--once")
    assert second.returncode == 0, second.stderr
    assert_same_state(duckdb_state(tmp_path / "wh.duckdb"), expected)


def test_resync_reloads_one_table_from_scratch_and_repairs_a_damaged_target(tmp_path: Path) -> None:
    import duckdb

    feed = Feed(tmp_path, seed=32)
    feed.release(feed.flushes)
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)
    assert run_cli("run", "-c", str(cfg), "--once").returncode == 0
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute('DELETE FROM "dbo"."patients" WHERE patient_id % 2 = 0')
    con.execute('UPDATE "dbo"."payments" SET amount = 0')  # another table: untouched
    damaged_payments = con.execute('SELECT count(*) FROM "dbo"."payments" WHERE amount = 0').fetchall()
    con.close()

    out = run_cli("resync", "dbo.patients", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert "resyncing" in out.stdout
    rerun = run_cli("run", "-c", str(cfg), "--once")
    assert rerun.returncode == 0, rerun.stderr
    assert '"event": "resync_started"' in rerun.stderr and '"event": "resync_finished"' in rerun.stderr

    expected = feed.expected()
    state = duckdb_state(tmp_path / "wh.duckdb")
    assert state["patients"] == expected["patients"]
    assert_same_state(only(state, OTHERS - {"patients"}), only(expected, OTHERS - {"patients"}))
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    assert (
        con.execute('SELECT count(*) FROM "dbo"."payments" WHERE amount = 0').fetchall() == damaged_payments
    )
    con.close()
    rows = {r["table"]: r for r in json.loads(run_cli("tables", "-c", str(cfg), "--json").stdout)["tables"]}
    assert rows["dbo.patients"]["state"] == "active"
    assert rows["dbo.patients"]["reason"] == "resync finished"


# -- a live daemon on PostgreSQL ----------------------------------------------------------------------------


def pg_state_of(dsn: str, names: set[str]) -> dict[str, dict[Any, Any]]:
    try:
        return only(postgres_state(dsn), names)
    except psycopg2.Error:
        return {}


def test_pausing_one_table_under_a_running_daemon_freezes_it_while_the_others_keep_up(
    tmp_path: Path, pg_dsn: str
) -> None:
    feed = Feed(tmp_path, seed=33, flushes=8)
    feed.release(2)
    port = free_port()
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=port)
    d = DaemonProcess(cfg, port, env=pg_env(pg_dsn))
    try:
        d.wait_ready()
        wait_for(lambda: postgres_state(pg_dsn) == feed.expected(), 60, "initial catch-up")
        code, row = http(
            "POST", f"{d.url}/tables/dbo.payments/pause", token=TOKEN, body={"reason": "backfill"}
        )
        assert code == 200 and row["state"] == "paused", row
        frozen = postgres_state(pg_dsn)["payments"]

        feed.release(6)
        expected = feed.expected()
        assert expected["payments"] != frozen, "the test needs new payment changes"
        wait_for(lambda: pg_state_of(pg_dsn, OTHERS) == only(expected, OTHERS), 60, "others keep up")
        wait_for(lambda: tables_of(d.url)["dbo.payments"]["backlog_batches"] > 0, 30, "payments staged")
        time.sleep(1.0)  # a few more rounds: nothing of payments may be merged meanwhile
        assert postgres_state(pg_dsn)["payments"] == frozen

        code, row = http("POST", f"{d.url}/tables/dbo.payments/resume", token=TOKEN)
        assert code == 200 and row["state"] == "active"
        wait_for(lambda: postgres_state(pg_dsn) == expected, 60, "payments catch up after resume")
    finally:
        assert d.terminate() == 0
    assert_same_state(postgres_state(pg_dsn), feed.expected())


def test_two_daemons_on_one_config_take_turns_and_the_second_takes_over_when_the_first_is_killed(
    tmp_path: Path, pg_dsn: str
) -> None:
    feed = Feed(tmp_path, seed=34, flushes=6)
    feed.release(2)
    pa, pb = free_port(), free_port()
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)
    a = DaemonProcess(cfg, pa, env={**pg_env(pg_dsn), "REPLICATOR__HTTP__PORT": str(pa)}, name="a")
    a.wait_ready()
    b = DaemonProcess(cfg, pb, env={**pg_env(pg_dsn), "REPLICATOR__HTTP__PORT": str(pb)}, name="b")
    try:
        wait_for(lambda: http("GET", f"{b.url}/healthz")[0] == 200, 30, "b alive")

        def b_waits_for_the_lease() -> bool:
            code, doc = http("GET", f"{b.url}/readyz")
            assert code == 503, doc  # never ready while a holds the lease
            return "waiting_for_lease" in doc["reasons"]

        # b passes through "starting" first; on a busy machine that takes a moment.
        wait_for(b_waits_for_the_lease, 30, "b reports waiting_for_lease")
        feed.release(2)
        wait_for(lambda: postgres_state(pg_dsn) == feed.expected(), 60, "a merges")
        assert a.events("batch_applied") and not b.events("batch_applied")
        assert http("GET", f"{b.url}/readyz")[0] == 503

        a.kill()
        b.wait_ready(timeout=30)
        feed.release(2)
        wait_for(lambda: postgres_state(pg_dsn) == feed.expected(), 60, "b takes over")
        assert b.events("batch_applied")
    finally:
        if a.proc.poll() is None:
            a.kill()
        assert b.terminate() == 0
    assert_same_state(postgres_state(pg_dsn), feed.expected())


# -- lifecycle ----------------------------------------------------------------------------------------------


def test_sigterm_in_the_middle_of_a_batch_exits_0_within_the_grace_period_and_loses_nothing(
    tmp_path: Path,
) -> None:
    feed = Feed(tmp_path, seed=35, patients=300, flushes=10, changes=300)
    feed.release(feed.flushes)
    port = free_port()
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=port, max_rows=200)
    d = DaemonProcess(cfg, port)
    wait_for(lambda: bool(d.events("batch_applied")), 60, lambda: d.log.read_text()[-2000:])
    sent = time.monotonic()
    rc = d.terminate(timeout=30)
    took = time.monotonic() - sent
    assert rc == 0, d.log.read_text()[-2000:]
    assert took < 10, f"took {took:.1f} s, the grace period is 10 s"
    assert d.events("shutdown_requested")
    log = d.log.read_text()
    assert TOKEN not in log

    rerun = run_cli("run", "-c", str(cfg), "--once")
    assert rerun.returncode == 0, rerun.stderr
    assert_same_state(duckdb_state(tmp_path / "wh.duckdb"), feed.expected())


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A PostgreSQL cluster of this test only (never the shared one), with stop and start functions."""
    # Not under tmp_path: pytest's base folder is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="replicator-pg-"))
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
    ctl = [*as_owner, str(PG_BIN / "pg_ctl"), "-D", str(data)]
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} -c fsync=off"

    def start() -> None:
        subprocess.run(
            [*ctl, "-l", str(root / "log"), "-o", opts, "-w", "start"],
            check=True, capture_output=True,
        )  # fmt: skip

    def stop() -> None:
        subprocess.run(
            [*ctl, "-m", "fast", "-w", "stop"],
            check=True, capture_output=True,
        )  # fmt: skip

    start()
    try:
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres", stop, start
    finally:
        subprocess.run(
            [*ctl, "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_the_daemon_recovers_by_itself_when_the_target_postgres_restarts(
    tmp_path: Path, own_postgres: tuple[str, Callable[[], None], Callable[[], None]]
) -> None:
    dsn, stop_pg, start_pg = own_postgres
    feed = Feed(tmp_path, seed=36, flushes=6)
    feed.release(2)
    port = free_port()
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=port)
    d = DaemonProcess(cfg, port, env=pg_env(dsn))
    try:
        d.wait_ready()
        wait_for(lambda: pg_state_of(dsn, OTHERS | {"payments"}) == feed.expected(), 60, "first catch-up")
        stop_pg()
        feed.release(2)
        wait_for(lambda: not d.ready(), 30, "not ready while the warehouse is down")
        time.sleep(1)
        start_pg()
        feed.release(2)
        wait_for(lambda: pg_state_of(dsn, OTHERS | {"payments"}) == feed.expected(), 90, "recovered")
        d.wait_ready()
    finally:
        assert d.terminate() == 0
    assert d.events("term_failed"), "the outage should have been noticed and retried"
