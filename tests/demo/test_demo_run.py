"""`replicator demo` on real time, and a closing hint that works as printed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from replicator.demo.feed import generate, generate_more
from replicator.demo.run import next_command
from tests.helpers.support import ROOT

CLI = [sys.executable, "-m", "replicator"]


def _cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=300, check=False, cwd=cwd, env=env
    )


def _commit_times(dms: Path) -> list[datetime]:
    """The dms_commit_ts of every CDC row (the second field: Op first)."""
    out = []
    for path in dms.rglob("*.csv"):
        if not path.name.startswith("LOAD"):
            with path.open(newline="") as f:
                out += [datetime.fromisoformat(r[1]) for r in csv.reader(f)]
    return out


def test_the_feed_never_commits_after_until_even_when_run_again_at_once(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    generate(
        tmp_path, patients=30, cdc_files=5, changes_per_file=40, start=now.replace(microsecond=0), until=now
    )
    assert max(_commit_times(tmp_path)) <= now  # 5 flushes squeezed into under a second
    later = datetime.now(UTC).replace(tzinfo=None)
    summary = generate_more(tmp_path, files=6, changes_per_file=40, until=later)
    assert summary.last_commit is not None and summary.last_commit <= later
    assert max(_commit_times(tmp_path)) <= later
    names = sorted(p.name for p in (tmp_path / "dbo" / "payments").glob("2*.csv"))
    assert len(names) == len(set(names))


def _lag(status: subprocess.CompletedProcess[str], table: str) -> float:
    assert status.returncode == 0, status.stderr
    rows = {r["table"]: r for r in json.loads(status.stdout)["tables"]}
    return float(rows[table]["lag_seconds"])


def test_a_paused_table_with_a_backlog_shows_a_growing_lag(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    assert _cli("demo", "--dir", str(demo)).returncode == 0
    cfg = str(demo / "replicator.toml")
    paused = _cli("pause", "dbo.payments", "--reason", "test", "-c", cfg)
    assert paused.returncode == 0, paused.stderr
    again = _cli("demo", "--dir", str(demo))  # run again right away: new CDC files, payments held back
    assert again.returncode == 0, again.stderr
    assert max(_commit_times(demo / "dms")) <= datetime.now(UTC).replace(tzinfo=None)
    first = _lag(_cli("status", "-c", cfg, "--json"), "dbo.payments")
    time.sleep(1.5)
    second = _lag(_cli("status", "-c", cfg, "--json"), "dbo.payments")
    assert first > 0 and second >= first + 1.0, (first, second)


def test_the_closing_hint_works_as_printed_from_where_the_demo_ran(tmp_path: Path) -> None:
    # A PATH with no replicator on it, as after `bash scripts/demo.sh` (the venv is not activated).
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    out = _cli("demo", "--dir", "demo", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    hint = out.stdout.strip().splitlines()[-1]
    assert hint.startswith("next: ")
    command = hint.removeprefix("next: ").split("   (")[0]
    status = subprocess.run(  # the hint is a shell command line
        command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert status.returncode == 0, (command, status.stderr)
    assert "dbo.payments" in status.stdout


def test_the_hint_names_the_interpreters_replicator_unless_path_finds_the_same(tmp_path: Path) -> None:
    os.chdir(tmp_path)
    try:
        command = next_command(tmp_path / "demo" / "replicator.toml")
    finally:
        os.chdir(ROOT)
    assert command.endswith(" status -c demo/replicator.toml")
    assert command.split()[0] in ("replicator", str(Path(sys.executable).parent / "replicator"))
