"""Issue 17, point 8: every admin call is audited: who (``caller``, a token id, never the token), from
where (the peer and any X-Forwarded-For a load balancer adds), what (action and table) and the outcome,
and is counted in ``replicator_admin_requests_total``."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from tests.helpers.daemon import TOKEN, DaemonProcess, Feed, daemon_config, free_port, http

TOKEN_ID = "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:12]


def _call(url: str, token: str, body: dict[str, str], forwarded: str) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("X-Forwarded-For", forwarded)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _count(url: str, action: str, result: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    pattern = rf'^replicator_admin_requests_total\{{action="{action}",result="{result}"\}} (\S+)$'
    found = re.findall(pattern, text, re.M)
    return float(found[0]) if found else 0.0


def test_admin_calls_are_audited_with_a_token_id_the_peer_and_the_outcome(tmp_path: Path) -> None:
    feed = Feed(tmp_path, seed=52, flushes=1)
    feed.release(1)
    port = free_port()
    d = DaemonProcess(daemon_config(tmp_path / "r.toml", source=feed.live, port=port), port)
    try:
        d.wait_ready()
        url = f"{d.url}/tables/dbo.practices/pause"
        assert _call(url, TOKEN, {"reason": "audit", "who": "alice"}, "203.0.113.7") == 200
        assert _call(url, "w" * 40, {"reason": "guess"}, "198.51.100.9") == 401
        assert http("GET", f"{d.url}/tables", token=TOKEN)[0] == 200
        assert _count(d.url, "pause", "ok") == 1
        assert _count(d.url, "pause", "unauthorized") == 1
        assert _count(d.url, "tables", "ok") == 1
    finally:
        assert d.terminate() == 0
    events = d.events("admin_request")
    ok = next(e for e in events if e["result"] == "ok" and e["action"] == "pause")
    assert ok["caller"] == TOKEN_ID and ok["table"] == "dbo.practices" and ok["reason"] == "audit"
    assert ok["client"] == "127.0.0.1" and ok["forwarded_for"] == "203.0.113.7" and "alice" in ok["who"]
    denied = next(e for e in events if e["result"] == "unauthorized")
    assert denied["caller"] is None and denied["forwarded_for"] == "198.51.100.9"
    assert denied["action"] == "pause" and denied["table"] == "dbo.practices"
    log = d.log.read_text()
    assert TOKEN not in log and "w" * 40 not in log
