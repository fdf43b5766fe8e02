"""Issue 17, point 3: the addresses the HTTP server binds. ``http.host`` for health and metrics (default
``0.0.0.0``, what Prometheus needs to reach an ECS awsvpc task), and the admin API optionally on its own
address and port (``http.admin_host``, loopback by default, and ``http.admin_port``)."""

from __future__ import annotations

import socket
from pathlib import Path

from replicator import config
from tests.helpers.daemon import TOKEN, DaemonProcess, Feed, daemon_config, free_port, http, wait_for
from tests.helpers.support import run_cli


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_defaults_serve_prometheus_on_every_address_and_the_admin_api_beside_it() -> None:
    http_cfg = config.HttpConfig()
    assert http_cfg.host == "0.0.0.0"  # the task's ENI address is what Prometheus scrapes
    assert http_cfg.admin_port == 0  # the admin API on the main port unless given its own
    assert http_cfg.admin_host == "127.0.0.1"


def test_the_admin_api_on_its_own_loopback_port_and_only_there(tmp_path: Path) -> None:
    feed = Feed(tmp_path, seed=45, flushes=1)
    feed.release(1)
    port, admin_port = free_port(), free_port()
    env = {
        "REPLICATOR__HTTP__HOST": "127.0.0.2",  # a second loopback address: not what the admin API binds
        "REPLICATOR__HTTP__ADMIN_HOST": "127.0.0.1",
        "REPLICATOR__HTTP__ADMIN_PORT": str(admin_port),
    }
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=port)
    d = DaemonProcess(cfg, port, env=env)
    public, admin = f"http://127.0.0.2:{port}", f"http://127.0.0.1:{admin_port}"
    try:
        wait_for(lambda: http("GET", f"{public}/readyz")[0] == 200, 40, lambda: d.log.read_text()[-3000:])
        # http.host is what the public listener binds, and nothing else.
        assert _refused("127.0.0.1", port)
        assert http("GET", f"{public}/healthz") == (200, "ok\n")
        assert http("GET", f"{public}/metrics")[0] == 200
        # The admin API is not on the public port, even with the right token ...
        assert http("GET", f"{public}/tables", token=TOKEN)[0] == 404
        code, _ = http("POST", f"{public}/tables/dbo.patients/pause", token=TOKEN, body={"reason": "x"})
        assert code == 404
        # ... but on its own address and port, and only on that address.
        assert _refused("127.0.0.2", admin_port)
        code, doc = http("GET", f"{admin}/tables", token=TOKEN)
        assert code == 200 and {r["table"]: r["state"] for r in doc["tables"]}["dbo.patients"] == "active"
        assert http("GET", f"{admin}/tables", token="x" * 40)[0] == 401
        code, row = http("POST", f"{admin}/tables/dbo.patients/pause", token=TOKEN, body={"reason": "m"})
        assert code == 200 and row["state"] == "paused", row
        # The CLI finds the daemon's admin API through its endpoint file.
        out = run_cli(
            "resume", "dbo.patients", "-c", str(cfg), env={"REPLICATOR__HTTP__ADMIN_TOKEN": TOKEN, **env}
        )
        assert out.returncode == 0, out.stderr
        states = {r["table"]: r["state"] for r in http("GET", f"{admin}/tables", token=TOKEN)[1]["tables"]}
        assert states["dbo.patients"] == "active"
    finally:
        assert d.terminate() == 0
    wrong = [e for e in d.events("admin_request") if e["result"] == "not_on_this_port"]
    assert len(wrong) == 2


def test_the_admin_port_must_differ_from_the_public_one(tmp_path: Path) -> None:
    cfg = config.load(
        None, environ={"REPLICATOR__HTTP__PORT": "9100", "REPLICATOR__HTTP__ADMIN_PORT": "9100"}
    )
    assert any("http.admin_port" in p for p in config.validate(cfg))
    off = config.load(None, environ={"REPLICATOR__HTTP__PORT": "0", "REPLICATOR__HTTP__ADMIN_PORT": "9101"})
    assert any("http.admin_port: needs http.port" in p for p in config.validate(off))
