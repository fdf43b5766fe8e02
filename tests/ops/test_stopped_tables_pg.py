"""A PostgreSQL source table stopped on a value its declared type cannot hold is STOPPED on every surface;
``retry``, ``skip`` and ``resume`` say that only a resync gets past it, and the resync clears it (issue 14).

The daemon runs against a real source and a real PostgreSQL target; ``beta``'s schema file declares
``note`` (text at the source) as ``integer``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.daemon import (
    TOKEN,
    DaemonProcess,
    free_port,
    http,
    pg_source_config,
    state,
    tables_of,
    wait_for,
)
from tests.helpers.support import run_cli
from tests.sources.postgres.conftest import source_dsn, target_dsn  # noqa: F401 - fixtures

BETA = "public.beta"


def _gauge(url: str) -> list[str]:
    text = str(http("GET", f"{url}/metrics")[1])
    mine = f'replicator_table_stopped{{reason="type_mismatch",table="{BETA}"}} 1.0'
    return [line for line in text.splitlines() if line == mine]


def test_a_postgresql_type_stop_shows_everywhere_and_only_a_resync_with_the_type_fixed_clears_it(
    tmp_path: Path,
    source_dsn: str,  # noqa: F811 - fixture
    target_dsn: str,  # noqa: F811 - fixture
) -> None:
    port = free_port()
    cfg, _ = pg_source_config(tmp_path, source_dsn, target_dsn, port)
    beta = tmp_path / "schemas" / "tables" / "beta.toml"
    beta.write_text(beta.read_text().replace('note = "text"', 'note = "integer"'))  # 'row 1' is no integer
    daemon = DaemonProcess(cfg, port)
    try:
        daemon.wait_ready()
        wait_for(
            lambda: tables_of(daemon.url)[BETA]["state"] == "stopped",
            60,
            lambda: daemon.log.read_text()[-3000:],
        )
        stop = tables_of(daemon.url)[BETA]["stopped"]
        assert stop["reason"] == "type_mismatch" and stop["actions"] == ["resync"] and stop["since"]
        assert tables_of(daemon.url)["public.alpha"]["state"] == "active"
        wait_for(lambda: bool(_gauge(daemon.url)), 20, "no replicator_table_stopped for beta")

        text = run_cli("status", "-c", str(cfg))
        assert text.returncode == 0 and f"STOPPED {BETA}: type_mismatch at " in text.stdout, text.stderr
        assert all(len(line) <= 120 for line in text.stdout.splitlines()), text.stdout
        doc = json.loads(run_cli("status", "--json", "-c", str(cfg)).stdout)
        assert {r["table"]: r for r in doc["tables"]}[BETA]["state"] == "stopped"
        listed = run_cli("tables", "-c", str(cfg))
        assert f"STOPPED {BETA}: type_mismatch" in listed.stdout, listed.stderr

        for action in ("retry", "skip", "resume"):
            out = run_cli(action, BETA, "-c", str(cfg))
            assert out.returncode == 1 and f"replicator resync {BETA}" in out.stderr, (action, out.stderr)
        code, answer = http("POST", f"{daemon.url}/tables/{BETA}/skip", token=TOKEN, body={"who": "test"})
        assert code == 409 and "resync" in answer["error"], answer

    finally:
        assert daemon.terminate() == 0

    beta.write_text(beta.read_text().replace('note = "integer"', 'note = "text"'))  # read at start-up
    second = DaemonProcess(cfg, port, name="daemon2")
    try:
        second.wait_ready()
        wait_for(lambda: bool(_gauge(second.url)), 30, "a restart keeps the stop, and its gauge")
        assert run_cli("resync", BETA, "--reason", "type fixed", "-c", str(cfg)).returncode == 0
        wait_for(
            lambda: tables_of(second.url)[BETA]["state"] == "active",
            60,
            lambda: second.log.read_text()[-3000:],
        )
        wait_for(lambda: state(target_dsn) == state(source_dsn), 60, lambda: second.log.read_text()[-3000:])
        wait_for(lambda: not _gauge(second.url), 20, "the gauge is cleared")
        assert tables_of(second.url)[BETA]["stopped"] is None
    finally:
        assert second.terminate() == 0
