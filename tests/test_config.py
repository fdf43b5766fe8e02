from __future__ import annotations

from pathlib import Path

import pytest

from replicator import config
from replicator.config import ConfigError, Secret


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "replicator.toml"
    p.write_text(text)
    return p


def test_defaults_are_the_embedded_default(tmp_path: Path) -> None:
    text = '[source]\npath = "dms"\n[staging]\npath = "staging"\n[warehouse]\npath = "wh.duckdb"\n'
    cfg = config.load(write(tmp_path, text), environ={})
    assert cfg.source.kind == "dms"
    assert cfg.warehouse.kind == "duckdb"
    assert config.validate(cfg) == []


def test_an_empty_config_names_the_required_keys_it_lacks(tmp_path: Path) -> None:
    problems = config.validate(config.load(write(tmp_path, ""), environ={}))
    assert [p.split(":")[0] for p in problems] == ["source.path", "staging.path", "warehouse.path"]
    assert "REPLICATOR__SOURCE__PATH" in problems[0]
    # A source or warehouse that needs no path does not ask for one.
    env = {
        "REPLICATOR__SOURCE__KIND": "postgres",
        "REPLICATOR__STAGING__PATH": "s",
        "REPLICATOR__WAREHOUSE__PATH": "w",
    }
    assert config.validate(config.load(write(tmp_path, ""), environ=env)) == []


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^REPLICATOR__BATCH__MAX_ROWS=-5 \(batch\.max_rows\): expected"):
        config.load(write(tmp_path, ""), environ={"REPLICATOR__BATCH__MAX_ROWS": "-5"})
    with pytest.raises(
        ConfigError, match=r"^REPLICATOR__WAREHOUSE__PORT=five \(warehouse\.port\): expected an int"
    ):
        config.load(write(tmp_path, ""), environ={"REPLICATOR__WAREHOUSE__PORT": "five"})
    with pytest.raises(ConfigError, match=r"^REPLICATOR__BATCH__MAX_ROWZ: unknown key batch\.max_rowz"):
        config.load(write(tmp_path, ""), environ={"REPLICATOR__BATCH__MAX_ROWZ": "5"})
    # From the file, the key alone.
    with pytest.raises(ConfigError, match=r"^batch\.max_rows: expected"):
        config.load(write(tmp_path, "[batch]\nmax_rows = -5\n"), environ={})


def test_bounds_are_worded_alike_whatever_the_value(tmp_path: Path) -> None:
    for value in ("0", "-5"):
        with pytest.raises(ConfigError, match=rf"batch\.max_rows: expected at least 1, got {value}$"):
            config.load(write(tmp_path, f"[batch]\nmax_rows = {value}\n"), environ={})
    with pytest.raises(ConfigError, match=r"batch\.max_bytes: expected at least 1024, got 10$"):
        config.load(write(tmp_path, "[batch]\nmax_bytes = 10\n"), environ={})
    with pytest.raises(
        ConfigError, match=r"pipeline\.poll_interval_seconds: expected at least 0, got -1\.0$"
    ):
        config.load(write(tmp_path, "[pipeline]\npoll_interval_seconds = -1.0\n"), environ={})


def test_a_config_path_that_is_a_folder_or_unreadable_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a folder, not a file"):
        config.load(tmp_path, environ={})
    unreadable = write(tmp_path, "")
    unreadable.write_bytes(b"\xff\xfe not text")
    with pytest.raises(ConfigError, match=r"cannot read config file .*: not UTF-8 text"):
        config.load(unreadable, environ={})


def test_environment_overrides_any_key_with_the_fields_type(tmp_path: Path) -> None:
    path = write(tmp_path, '[warehouse]\nkind = "postgres"\nport = 5432\n')
    cfg = config.load(
        path,
        environ={
            "REPLICATOR__WAREHOUSE__PORT": "6543",
            "REPLICATOR__BATCH__MAX_AGE_SECONDS": "0.5",
            "REPLICATOR__SOURCE__DMS__INCLUDE_OP_FOR_FULL_LOAD": "true",
            "UNRELATED": "x",
        },
    )
    assert cfg.warehouse.port == 6543
    assert cfg.batch.max_age_seconds == 0.5
    assert cfg.source.dms.include_op_for_full_load is True


def test_unknown_key_is_named_with_the_expected_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key warehouse\.pasword.*expected one of"):
        config.load(write(tmp_path, '[warehouse]\npasword_file = "x"\n'), environ={})


def test_wrong_type_names_the_key_and_expected_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"batch\.max_rows: expected an integer, got 'many'"):
        config.load(write(tmp_path, '[batch]\nmax_rows = "many"\n'), environ={})
    with pytest.raises(
        ConfigError,
        match=r"\(warehouse\.kind\): expected one of 'duckdb', 'postgres', 'redshift', got 'oracle'",
    ):
        config.load(write(tmp_path, ""), environ={"REPLICATOR__WAREHOUSE__KIND": "oracle"})
    with pytest.raises(
        ConfigError, match=r"REPLICATOR__WAREHOUSE__PORT|warehouse\.port: expected an integer"
    ):
        config.load(write(tmp_path, ""), environ={"REPLICATOR__WAREHOUSE__PORT": "five"})


def test_inline_password_is_refused_and_the_error_does_not_echo_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, '[warehouse]\npassword = "hunter2"\n'), environ={})
    assert "hunter2" not in str(info.value)
    assert "REPLICATOR__WAREHOUSE__PASSWORD" in str(info.value)


def test_password_from_environment_or_file_is_hidden_in_repr(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ""), environ={"REPLICATOR__WAREHOUSE__PASSWORD": "s3cret"})
    assert cfg.warehouse.password == Secret("s3cret")
    assert "s3cret" not in repr(cfg)
    assert "s3cret" not in str(cfg.warehouse)
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    cfg = config.load(write(tmp_path, f'[warehouse]\npassword_file = "{secret_file}"\n'), environ={})
    assert cfg.warehouse.password is not None
    assert cfg.warehouse.password.reveal() == "from-file"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[staging]\npath = "stage"\n'), environ={})
    assert config.resolve(cfg, cfg.staging.path) == str(tmp_path / "stage")
    assert config.resolve(cfg, "s3://b/p") == "s3://b/p"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml", environ={})


def test_configuration_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "replicator", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    folder = cli("check", "-c", str(tmp_path))
    assert folder.returncode == 2, folder.stderr
    assert (
        folder.stderr.startswith("replicator: configuration error: config file") and "folder" in folder.stderr
    )
    empty = cli("check", "-c", str(write(tmp_path, "")))
    assert empty.returncode == 2
    assert "source.path: required" in empty.stderr and "staging.path: required" in empty.stderr
    assert empty.stdout == ""
    no_schemas = write(
        tmp_path, '[source]\npath = "."\n[staging]\npath = "st"\n[warehouse]\npath = "w.duckdb"\n'
    )
    missing = cli("check", "-c", str(no_schemas))
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "FAIL  schemas" in missing.stdout


@pytest.mark.parametrize(
    ("warehouse", "extra", "expected"),
    [
        ("duckdb", "", 16 << 20),  # DuckDB holds a batch's new values until its commit (issue 13 point 8)
        ("postgres", 'host = "h"\n', 64 << 20),
        ("redshift", 'host = "h"\n', 64 << 20),
        ("duckdb", "", 1 << 20),  # set: kept, whatever the warehouse
    ],
)
def test_the_batch_size_defaults_per_warehouse_and_a_set_one_is_kept(
    tmp_path: Path, warehouse: str, extra: str, expected: int
) -> None:
    batch = "[batch]\nmax_bytes = 1048576\n" if expected == 1 << 20 else ""
    text = f'{batch}[warehouse]\nkind = "{warehouse}"\n{extra}'
    cfg = config.load(write(tmp_path, text), environ={})
    assert cfg.batch.max_bytes == expected and cfg.batch.bytes == expected
