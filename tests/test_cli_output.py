"""The command line as a Unix tool: results on stdout, logs and errors on stderr, each error once, and a
reader that goes away (`replicator demo | head`) ends the command quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.support import write_config

CLI = [sys.executable, "-m", "replicator"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def broken_warehouse(tmp_path: Path) -> Path:
    """A config whose DuckDB file is not a database: commands fail after the config is read."""
    (tmp_path / "dms").mkdir()
    (tmp_path / "warehouse.duckdb").write_text("not a database")
    dms, staging = str(tmp_path / "dms"), str(tmp_path / "st")
    return write_config(tmp_path / "replicator.toml", source=dms, staging=staging)


def test_a_reader_that_closes_stdout_ends_the_demo_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "demo", "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like `head -1`: the summary printed after the replication finds no reader
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert first.startswith(b"wrote a sample DMS feed")
    assert "BrokenPipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err
    assert err == ""
    assert code == 141  # 128 + SIGPIPE, as a shell reports `yes | head -1`


def test_a_failing_command_says_its_error_once_on_stderr_and_nothing_on_stdout(tmp_path: Path) -> None:
    result = cli("status", "-c", str(broken_warehouse(tmp_path)))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("replicator: "), result.stderr


def test_an_error_before_the_config_is_read_is_not_a_log_line_on_stdout(tmp_path: Path) -> None:
    result = cli("check", "-c", str(tmp_path))
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_daemon_reports_a_failure_as_one_log_event_on_stderr(tmp_path: Path) -> None:
    result = cli("run", "--once", "-c", str(broken_warehouse(tmp_path)))
    assert result.returncode == 1
    assert result.stdout == ""
    failures = [line for line in result.stderr.splitlines() if "not a valid DuckDB" in line]
    assert len(failures) == 1 and '"event": "failed"' in failures[0], result.stderr


def test_every_command_that_prints_ends_quietly_on_a_closed_stdout(tmp_path: Path) -> None:
    (tmp_path / "dms").mkdir()
    cfg = write_config(
        tmp_path / "replicator.toml", source=str(tmp_path / "dms"), staging=str(tmp_path / "st")
    )
    endpoint = tmp_path / "endpoint.json"
    endpoint.write_text('{"CsvNullValue": "NULL", "AddColumnName": true}')
    for args in (["check", "-c", str(cfg)], ["status", "-c", str(cfg)], ["dms-settings", str(endpoint)]):
        proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the command prints anything
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141, (args, err)
        assert err == "", (args, err)
