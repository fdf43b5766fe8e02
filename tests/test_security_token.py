"""Issue 17, point 1: an empty, blank or short admin token must never open the admin API.

The daemon refuses to start (exit 2, a configuration error) and says how long a token must be and how to make
one; a token from a file or from the environment alike. The HTTP server itself refuses an empty token too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator import config
from replicator.config import Secret
from replicator.ops import ObsServer
from tests.helpers.support import run_cli

GOOD = "0123456789abcdef" * 4  # 64 characters, like `openssl rand -hex 32`


def _cfg(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "r.toml"
    path.write_text(
        f"""[source]
path = "{tmp_path / "dms"}"
[staging]
path = "{tmp_path / "stage"}"
[warehouse]
kind = "duckdb"
path = "{tmp_path / "wh.duckdb"}"
[http]
host = "127.0.0.1"
port = 0
{extra}"""
    )
    return path


@pytest.mark.parametrize("content", ["", "\n", "   \n\t", "short-token", "x" * 31])
def test_a_token_file_that_is_empty_blank_or_short_makes_run_exit_2(tmp_path: Path, content: str) -> None:
    secret = tmp_path / "token"
    secret.write_text(content)
    cfg = _cfg(tmp_path, f'admin_token_file = "{secret}"\n')
    out = run_cli("run", "--once", "-c", str(cfg), env={"REPLICATOR__HTTP__ADMIN_TOKEN": ""}, timeout=60)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "http.admin_token" in out.stderr and "32" in out.stderr and "openssl rand -hex 32" in out.stderr
    if content.strip():
        assert content.strip() not in out.stderr, "the refused token was printed"
    assert not (tmp_path / "wh.duckdb").exists(), "the daemon started before refusing the token"


@pytest.mark.parametrize("value", [" ", "\t\t", "op-token-7f3a9c", "y" * 31])
def test_a_blank_or_short_token_from_the_environment_makes_run_exit_2(tmp_path: Path, value: str) -> None:
    out = run_cli("run", "-c", str(_cfg(tmp_path)), env={"REPLICATOR__HTTP__ADMIN_TOKEN": value}, timeout=60)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "at least 32 characters" in out.stderr and "openssl rand -hex 32" in out.stderr


def test_validate_accepts_a_long_token_and_no_token(tmp_path: Path) -> None:
    good = config.load(_cfg(tmp_path), environ={"REPLICATOR__HTTP__ADMIN_TOKEN": GOOD})
    assert config.validate(good) == []
    assert config.validate(config.load(_cfg(tmp_path), environ={})) == []  # no token: the admin API is off


def test_a_token_padded_with_blanks_counts_only_its_characters(tmp_path: Path) -> None:
    padded = config.load(_cfg(tmp_path), environ={"REPLICATOR__HTTP__ADMIN_TOKEN": " " * 40 + "abc"})
    assert any("http.admin_token" in p for p in config.validate(padded))


@pytest.mark.parametrize("token", ["", "   ", "abc"])
def test_the_server_refuses_to_serve_the_admin_api_with_a_weak_token(token: str) -> None:
    with pytest.raises(ValueError, match="at least 32 characters"):
        ObsServer("127.0.0.1", 0, backend=None, admin_token=Secret(token))  # type: ignore[arg-type]
