"""A real Prometheus (Debian's ``prometheus`` package) scrapes the daemon; ``promtool check metrics`` accepts
the exposition. scripts/lib.sh installs the package when promtool is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.daemon import DaemonProcess, Feed, caught_up, daemon_config, free_port, wait_for


def _binary(name: str) -> str:
    found = os.environ.get(name.upper()) or shutil.which(name) or f"/usr/bin/{name}"
    if not Path(found).exists():
        pytest.fail(f"{name} is missing: install Debian's prometheus package (scripts/lib.sh does)")
    return found


def _query(port: int, expr: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            result: list[dict[str, object]] = json.loads(r.read())["data"]["result"]
            return result
    except OSError:
        return []


def test_prometheus_scrapes_the_daemon_and_promtool_finds_nothing_to_complain_about(tmp_path: Path) -> None:
    promtool, prometheus = _binary("promtool"), _binary("prometheus")
    feed = Feed(tmp_path, seed=51, flushes=3)
    feed.release(3)
    port = free_port()
    d = DaemonProcess(daemon_config(tmp_path / "r.toml", source=feed.live, port=port), port)
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        f"""global:
  scrape_interval: 1s
scrape_configs:
  - job_name: replicator
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""
    )
    prom = subprocess.Popen(
        [
            prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"),
    )  # fmt: skip
    try:
        d.wait_ready()
        wait_for(lambda: caught_up(d.url), 60, "caught up")
        wait_for(
            lambda: bool(_query(prom_port, 'replicator_changes_merged_total{table="dbo.payments"}')),
            60, lambda: (tmp_path / "prometheus.log").read_text()[-2000:],
        )  # fmt: skip
        up = _query(prom_port, 'up{job="replicator"}')
        assert up and up[0]["value"][1] == "1"  # type: ignore[index]
        for expr in (
            "replicator_build_info",
            "replicator_batch_rows_bucket",
            "replicator_merge_duration_seconds_count",
            "replicator_lag_seconds",
            "replicator_paused_tables",
            'replicator_lease_held{scope="default"}',
        ):
            assert _query(prom_port, expr), f"Prometheus has no {expr}"

        with urllib.request.urlopen(f"{d.url}/metrics", timeout=5) as r:
            text = r.read()
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
        assert check.returncode == 0 and check.stdout == b"" and check.stderr == b"", (
            check.stdout.decode() + check.stderr.decode()
        )
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        assert d.terminate() == 0
