"""The admin API of a running daemon: bearer token, constant-time check, audit events, health endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemon import (
    TOKEN,
    DaemonProcess,
    Feed,
    caught_up,
    daemon_config,
    free_port,
    http,
    tables_of,
    wait_for,
)
from tests.helpers.support import run_cli


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("admin")
    feed = Feed(root, seed=41, flushes=2)
    feed.release(2)
    port = free_port()
    d = DaemonProcess(daemon_config(root / "r.toml", source=feed.live, port=port), port)
    d.wait_ready()
    wait_for(lambda: caught_up(d.url), 60, "caught up")
    yield d
    assert d.terminate() == 0
    assert TOKEN not in d.log.read_text(), "the admin token leaked into the log"


def test_health_and_readiness_answer_200_for_the_active_daemon(daemon: DaemonProcess) -> None:
    assert http("GET", f"{daemon.url}/healthz") == (200, "ok\n")
    code, doc = http("GET", f"{daemon.url}/readyz")
    assert code == 200 and doc["ready"] is True and doc["phase"] == "active" and doc["reasons"] == []


@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN + "x", ""])
def test_admin_calls_without_the_right_token_get_401_and_change_nothing(
    daemon: DaemonProcess, token: str | None
) -> None:
    def control() -> dict[str, tuple[Any, ...]]:
        # The control state only: backlog counts move on their own while the daemon works.
        return {
            t: (r["state"], r["reason"], r["changed_by"], r.get("since"))
            for t, r in tables_of(daemon.url).items()
        }

    before = control()
    code, doc = http("POST", f"{daemon.url}/tables/dbo.patients/pause", token=token, body={"reason": "x"})
    assert code == 401, doc
    assert http("GET", f"{daemon.url}/tables", token=token)[0] == 401
    assert control() == before
    assert any(e["result"] == "unauthorized" for e in daemon.events("admin_request"))


def test_a_pause_with_the_token_is_stored_with_its_reason_and_author_and_audited(
    daemon: DaemonProcess,
) -> None:
    code, row = http(
        "POST", f"{daemon.url}/tables/dbo.practices/pause", token=TOKEN,
        body={"reason": "warehouse maintenance", "who": "alice"},
    )  # fmt: skip
    assert code == 200, row
    listed = tables_of(daemon.url)["dbo.practices"]
    assert listed["state"] == "paused"
    assert listed["reason"] == "warehouse maintenance"
    assert listed["changed_by"] == "alice (127.0.0.1)"
    assert listed["since"]
    audit = [e for e in daemon.events("admin_request") if e["result"] == "ok" and e["action"] == "pause"]
    assert audit and audit[-1]["table"] == "dbo.practices" and audit[-1]["who"] == "alice (127.0.0.1)"

    code, row = http("POST", f"{daemon.url}/tables/dbo.practices/resume", token=TOKEN)
    assert code == 200 and row["state"] == "active"


def test_the_cli_goes_through_the_running_daemon_for_an_embedded_duckdb_file(daemon: DaemonProcess) -> None:
    cfg = daemon.log.parent / "r.toml"
    env = {"REPLICATOR__HTTP__ADMIN_TOKEN": TOKEN}
    out = run_cli("pause", "dbo.payment_plans", "--reason", "backfill", "-c", str(cfg), env=env)
    assert out.returncode == 0, out.stderr
    assert tables_of(daemon.url)["dbo.payment_plans"]["state"] == "paused"
    listed = run_cli("tables", "-c", str(cfg), env=env)
    assert "dbo.payment_plans" in listed.stdout and "backfill" in listed.stdout
    assert run_cli("resume", "dbo.payment_plans", "-c", str(cfg), env=env).returncode == 0
    assert tables_of(daemon.url)["dbo.payment_plans"]["state"] == "active"

    no_token = run_cli("pause", "dbo.payment_plans", "--reason", "x", "-c", str(cfg))
    assert no_token.returncode == 1 and "ADMIN_TOKEN" in no_token.stderr


def test_unknown_tables_and_actions_are_refused(daemon: DaemonProcess) -> None:
    assert http("POST", f"{daemon.url}/tables/dbo.nope/pause", token=TOKEN)[0] == 404
    assert http("POST", f"{daemon.url}/tables/dbo.patients/drop", token=TOKEN)[0] == 404
    assert http("POST", f"{daemon.url}/tables/nodot/pause", token=TOKEN)[0] == 400


def test_the_admin_api_is_off_without_a_configured_token(tmp_path: Path) -> None:
    feed = Feed(tmp_path, seed=42, flushes=1)
    port = free_port()
    d = DaemonProcess(
        daemon_config(tmp_path / "r.toml", source=feed.live, port=port), port,
        env={"REPLICATOR__HTTP__ADMIN_TOKEN": ""},
    )  # fmt: skip
    try:
        d.wait_ready()
        assert http("POST", f"{d.url}/tables/dbo.patients/pause", token="anything")[0] == 403
        assert http("GET", f"{d.url}/tables", token="")[0] == 403
    finally:
        assert d.terminate() == 0
