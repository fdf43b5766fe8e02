"""A schema file naming a type the catalog does not know is a configuration error, said before anything
runs (``check`` lists it among its failures, and exits 2 too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.support import ROOT, run_cli, write_config


@pytest.mark.parametrize(("command", "code"), [(["run", "--once"], 2), (["status"], 2), (["check"], 2)])
def test_an_unknown_column_type_is_a_configuration_error_naming_the_file_column_and_type(
    tmp_path: Path, command: list[str], code: int
) -> None:
    folder = tmp_path / "schemas" / "tables"
    folder.mkdir(parents=True)
    (folder / "t.toml").write_text(
        'schema = "public"\nname = "t"\nprimary_key = ["id"]\n[columns]\nid = "integer"\nmood = "mood"\n'
    )
    cfg = write_config(tmp_path / "r.toml", source=str(tmp_path / "feed"), staging=str(tmp_path / "stage"))
    cfg.write_text(cfg.read_text().replace(str(ROOT / "schemas"), str(tmp_path / "schemas")))
    out = run_cli(*command, "-c", str(cfg), timeout=60)
    said = out.stdout + out.stderr
    assert out.returncode == code, said
    assert "t.toml: column mood: unknown column type 'mood'" in said
    assert "Enums and other user-defined types: declare text" in said
    assert "Traceback" not in said
