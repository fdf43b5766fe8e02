"""What the daemon really exports on /metrics, for checking dashboard and alert queries against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from replicator import config
from replicator.demo import feed as demo
from replicator.ops import commands
from tests.helpers.ports import free_port
from tests.helpers.support import ROOT, write_config

# The sample names each metric type exposes (prometheus_client), for families the scrape has no samples of.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "unknown": ("",),
}


def exported_metrics(workdir: Path) -> dict[str, set[str] | None]:
    """Sample name -> label names seen (None: the family is declared but had no sample in the scrape).

    Replicates a small demo feed first so the per-table families carry samples with their labels. Scrapes the
    daemon's real HTTP /metrics (``replicator run`` in a child process) once replicator/ops/http.py exists;
    until then renders the in-process registry after an in-process run (the same text the server would serve).
    """
    dms = workdir / "dms"
    demo.generate(dms, patients=20, cdc_files=2, changes_per_file=20)
    cfg_path = write_config(workdir / "replicator.toml", source=str(dms), staging=str(workdir / "staging"))
    if (ROOT / "replicator" / "obs" / "server.py").exists():
        text = _scrape_daemon(cfg_path)
    else:
        cfg = config.load(cfg_path)
        assert commands.run(cfg, once=True, stop=threading.Event()) == 0
        text = generate_latest().decode()
    return parse(text)


def parse(text: str) -> dict[str, set[str] | None]:
    out: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(text):
        if family.samples:
            for sample in family.samples:
                labels = out.get(sample.name) or set()
                out[sample.name] = labels | set(sample.labels)
        else:
            base = family.name.removesuffix("_info") if family.type == "info" else family.name
            for suffix in _SUFFIXES.get(family.type, ("",)):
                out.setdefault(base + suffix, None)
    return out


def _scrape_daemon(cfg_path: Path, timeout: float = 90) -> str:
    port = free_port()
    env = {**os.environ, "REPLICATOR__HTTP__HOST": "127.0.0.1", "REPLICATOR__HTTP__PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicator", "run", "-c", str(cfg_path)],
        env=env, cwd=cfg_path.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            assert proc.poll() is None, (
                f"replicator run exited {proc.returncode}: {proc.stderr.read()[-3000:]}"
            )  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    text = resp.read().decode()
            except OSError:
                text = ""
            if "replicator_changes_merged_total{" in text and "replicator_backlog_batches{" in text:
                return text
            time.sleep(0.5)
        raise AssertionError(f"no merged changes on http://127.0.0.1:{port}/metrics within {timeout} s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
