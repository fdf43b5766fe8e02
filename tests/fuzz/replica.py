"""The replicator under test: ``replicator run`` as a child process that the fuzzer starts, SIGKILLs, crashes
at a named point (``REPLICATOR_CRASH_AT``) and finally lets catch up.

Targets: ``duckdb`` (a file), ``postgres`` (a database of the test server) and ``redshift``: the Redshift
warehouse's code path on PostgreSQL through ``redshift_connector`` and the test shim
(``tests.fuzz.redshift_daemon`` runs the same daemon with the warehouse swapped, as the conformance suite
does in-process).

Caught up means: the slot confirmed the WAL position written after the workload (a marker row is updated
last, so there is a commit to confirm), and no table has a staged batch left to merge or an error.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.ops import TableDef
from tests.helpers.pg import confirmed_flush, current_lsn, dsn_params, execute
from tests.helpers.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fuzz-token-" + "a" * 32
MARKER = "fuzz_marker"
_FAILED = re.compile(r'"event": "(term_failed|merge_failed)"')  # a daemon going round in circles
MARKER_SCHEMA = f"""schema = "public"
name = "{MARKER}"
primary_key = ["id"]
[columns]
id = "integer not null"
n = "bigint"
"""


def source_ddl() -> list[str]:
    return [f"CREATE TABLE {MARKER} (id int PRIMARY KEY, n bigint)", f"INSERT INTO {MARKER} VALUES (1, 0)"]


def _config(
    tmp: Path, target: str, source: str, target_dsn: str, slot: str, port: int, batch_rows: int
) -> str:
    src = dsn_params(source)
    if target == "duckdb":
        warehouse = f'kind = "duckdb"\npath = "{tmp / "wh.duckdb"}"'
    else:
        dst = dsn_params(target_dsn)
        warehouse = (
            f'kind = "postgres"\nhost = "{dst["host"]}"\nport = {dst["port"]}\ndatabase = "{dst["dbname"]}"\n'
            f'user = "{dst["user"]}"\nsslmode = "disable"'
        )
    return f"""schemas = "{tmp / "schemas"}"
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
{warehouse}
[batch]
max_rows = {batch_rows}
max_age_seconds = 0.3
[pipeline]
poll_interval_seconds = 0.1
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


@dataclass
class Incarnations:
    started: int = 0
    killed: int = 0
    crashed: int = 0  # died at a crash point (SIGKILL of itself)
    unexpected: list[str] = field(default_factory=list)  # exited on its own: exit code and log tail


class Replica:
    """One daemon (at most) at a time, over the tables of a workload, replicating ``source`` to ``target``."""

    def __init__(
        self, tmp: Path, tables: tuple[TableDef, ...], *, target: str, source: str, target_dsn: str = "",
        batch_rows: int = 2000, code: Path = ROOT,
    ) -> None:  # fmt: skip
        self.tmp, self.target, self.source, self.target_dsn, self.code = tmp, target, source, target_dsn, code
        self.slot = f"fz_{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        folder = tmp / "schemas" / "tables"
        folder.mkdir(parents=True)
        for t in tables:
            (folder / f"{t.name}.toml").write_text(t.schema_file(target))
        (folder / f"{MARKER}.toml").write_text(MARKER_SCHEMA)
        self.config = tmp / "r.toml"
        self.config.write_text(_config(tmp, target, source, target_dsn, self.slot, self.port, batch_rows))
        self.log = tmp / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.crash_at: str | None = None
        self.runs = Incarnations()

    # -- the process ----------------------------------------------------------------------------------

    def start(self, crash_at: str | None = None) -> None:
        assert self.proc is None
        env = {**os.environ, "REPLICATOR__HTTP__ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(self.code)}
        env.pop("REPLICATOR_CRASH_AT", None)
        if crash_at:
            env["REPLICATOR_CRASH_AT"] = crash_at
        command = [sys.executable, "-m", "replicator"]
        if self.target == "redshift":
            # By path: the code under test may be a checkout without tests/fuzz (its tests/ comes first).
            command = [sys.executable, str(Path(__file__).with_name("redshift_daemon.py"))]
            env["FUZZ_REDSHIFT_DSN"] = self.target_dsn
            env["PYTHONPATH"] = f"{self.code}{os.pathsep}{ROOT}"
        with self.log.open("a") as log:
            log.write(f"\n==== start {self.runs.started + 1} crash_at={crash_at}\n")
            log.flush()
            self.proc = subprocess.Popen(
                [*command, "run", "-c", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=log, cwd=self.code, env=env,
            )  # fmt: skip
        self.crash_at = crash_at
        self.runs.started += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.runs.killed += 1
        self.proc = None

    def wait_crash(self, timeout: float) -> None:
        """Give a daemon started with a crash point up to ``timeout`` seconds to reach it (and die) before
        it is replaced: a crash point that never fires tests nothing."""
        deadline = time.monotonic() + timeout
        while self.crash_at and self.proc is not None and self.proc.poll() is None:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        self.poll()

    def wait_active(self, timeout: float = 30.0) -> None:
        """Until the daemon holds the lease and works (its admin API lists the tables), or it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
            if self.tables_status() is not None:
                return
            time.sleep(0.05)

    def wait_slot(self, timeout: float = 60.0) -> None:
        """Until the slot exists: what is written from then on streams (before, the initial copy takes it)."""
        deadline = time.monotonic() + timeout
        # Not the slot's row: it shows while the slot still waits for a consistent point.
        while time.monotonic() < deadline and '"replication_slot_created"' not in self.log_tail(10**9):
            self.poll()
            time.sleep(0.05)

    def wait_copied(self, timeout: float = 60.0) -> None:
        """Until the initial copy is complete (started if need be). A column added or dropped at the source
        while a copy may still be (re)done is a known divergence (see tests/fuzz/README.md): by default the
        fuzzer changes columns only once the copy is out, to find the next one."""
        if self.proc is None:
            self.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.copied():
            self.poll()
            time.sleep(0.1)

    def copied(self) -> bool:
        """The last initial copy begun (a slot created) is complete: a copy cut short by a kill is redone."""
        log = self.log_tail(10**9)
        return log.rfind('"snapshot_complete"') > log.rfind('"replication_slot_created"') >= 0

    def restart(self, crash_at: str | None = None) -> None:
        self.kill()
        self.start(crash_at)

    def poll(self) -> None:
        """Start the daemon again if it died: at its crash point (expected) or on its own (recorded)."""
        if self.proc is None or self.proc.poll() is None:
            return
        rc = self.proc.returncode
        if rc == -signal.SIGKILL and self.crash_at:
            self.runs.crashed += 1
        else:
            self.runs.unexpected.append(f"exit code {rc}: {self.log_tail(1500)}")
        self.proc = None
        self.start()

    def stop(self) -> None:
        """SIGTERM and wait (a graceful stop: it releases the lease and the DuckDB file)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.runs.unexpected.append("did not stop within 30 s of SIGTERM")
        self.proc = None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    # -- catching up ----------------------------------------------------------------------------------

    def tables_status(self) -> list[dict[str, object]] | None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/tables")
        req.add_header("Authorization", f"Bearer {TOKEN}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                rows: list[dict[str, object]] = json.loads(r.read())["tables"]
                return rows
        except (OSError, ValueError, KeyError):
            return None

    def catch_up(self, timeout: float) -> list[str]:
        """Let the daemon catch up with everything written so far, then stop it. Returns the problems seen
        (empty when caught up): the slot short of the end, a table's error or backlog, a daemon that keeps
        failing (failed terms and merges counted from here: five end the wait early)."""
        execute(self.source, f"UPDATE {MARKER} SET n = n + 1 WHERE id = 1")
        goal = current_lsn(self.source)
        if self.proc is None:
            self.start()
        deadline = time.monotonic() + timeout
        log_from = len(self.log_tail(10**9))
        problems: list[str] = []
        while not problems:
            self.poll()
            confirmed = confirmed_flush(self.source, self.slot)
            rows = self.tables_status() if confirmed >= goal and self.copied() else None
            if rows is not None and not any(r.get("error") or r.get("backlog_batches") for r in rows):
                break
            failures = [x for x in self.log_tail(10**9)[log_from:].splitlines() if _FAILED.search(x)]
            if len(failures) >= 5 or len(self.runs.unexpected) >= 5:
                last = failures[-1][:600] if failures else self.runs.unexpected[-1]
                problems.append(f"the daemon keeps failing ({len(failures)}x): {last}")
            elif time.monotonic() > deadline:
                problems.append(
                    f"not caught up after {timeout:.0f} s: slot at {confirmed:X}, goal {goal:X}, "
                    f"initial copy complete: {self.copied()}, admin API answers: {rows is not None}"
                )
            else:
                time.sleep(0.2)
                continue
            problems += [
                f"{r['table']}: backlog {r.get('backlog_batches')}, error {r.get('error')}"
                for r in self.tables_status() or []
                if r.get("error") or r.get("backlog_batches")
            ]
        self.stop()
        problems += [f"the daemon exited on its own: {u}" for u in self.runs.unexpected]
        # A table stopped on a value its declared type cannot hold: the schema files here are right.
        problems += [f"table stopped: {line[:400]}" for line in self.log_tail(10**9).splitlines()
                     if '"pg_table_stopped"' in line]  # fmt: skip
        return problems
