"""Issue 17, point 7: a configuration error found while the daemon starts is fatal in every mode.

``replicator run --once`` already exited 2; the long-running daemon retried its start for ever (4 tries in
5 s) with a missing HMAC key. Now both exit 2 at once with the error; only transient faults are retried.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.daemon import Feed, daemon_config
from tests.helpers.support import ROOT, run_cli


def _hashed_schemas(tmp_path: Path) -> Path:
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    patients = schemas / "tables" / "patients.toml"
    patients.write_text(patients.read_text() + '\n[policies]\nemail = "hash"\n')
    return schemas


@pytest.mark.parametrize("once", [True, False])
def test_a_hashed_column_without_an_hmac_key_stops_the_daemon_with_exit_2(tmp_path: Path, once: bool) -> None:
    feed = Feed(tmp_path, seed=48, flushes=1)
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)
    cfg.write_text(
        cfg.read_text().replace(f'schemas = "{ROOT / "schemas"}"', f'schemas = "{_hashed_schemas(tmp_path)}"')
    )
    start = time.monotonic()
    try:
        out = run_cli("run", *(["--once"] if once else []), "-c", str(cfg), timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon kept retrying a configuration error instead of exiting 2")
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "configuration error" in out.stderr and "no key is configured" in out.stderr
    assert out.stderr.count('"event": "term_failed"') == 0, "retried before giving up"
    assert time.monotonic() - start < 20


def test_a_missing_schemas_folder_stops_the_daemon_with_exit_2(tmp_path: Path) -> None:
    feed = Feed(tmp_path, seed=49, flushes=1)
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)
    cfg.write_text(
        cfg.read_text().replace(f'schemas = "{ROOT / "schemas"}"', f'schemas = "{tmp_path / "nope"}"')
    )
    try:
        out = run_cli("run", "-c", str(cfg), timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon kept retrying a configuration error instead of exiting 2")
    assert out.returncode == 2 and "schemas" in out.stderr, (out.returncode, out.stderr[-2000:])
