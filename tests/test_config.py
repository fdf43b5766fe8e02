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
    cfg = config.load(write(tmp_path, ""), environ={})
    assert cfg.source.kind == "dms"
    assert cfg.warehouse.kind == "duckdb"
    assert config.validate(cfg) == []


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
        ConfigError, match=r"warehouse\.kind: expected one of 'duckdb', 'postgres', 'redshift', got 'oracle'"
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
