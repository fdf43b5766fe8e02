"""`replicator check` says what is wrong and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.support import run_cli, write_config


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_missing_source_folder_fails_the_check_and_nothing_is_created(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "replicator.toml", source=str(tmp_path / "dsm"), staging=str(tmp_path / "st")
    )
    before = _tree(tmp_path)
    out = run_cli("check", "-c", str(cfg))
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"FAIL  source: source.path: {tmp_path / 'dsm'} does not exist" in out.stdout
    assert "ok    staging" in out.stdout and "created on the first run" in out.stdout
    assert _tree(tmp_path) == before  # no source folder, no staging folder, no warehouse file


def test_the_staging_probe_leaves_no_trace(tmp_path: Path) -> None:
    (tmp_path / "dms").mkdir()
    (tmp_path / "st").mkdir()
    cfg = write_config(
        tmp_path / "replicator.toml", source=str(tmp_path / "dms"), staging=str(tmp_path / "st")
    )
    out = run_cli("check", "-c", str(cfg))
    assert (
        "ok    source" in out.stdout
        and "ok    staging" in out.stdout
        and "(write, read, delete)" in out.stdout
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert _tree(tmp_path / "st") == []


def test_a_source_path_that_is_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "dms").write_text("not a folder")
    cfg = write_config(
        tmp_path / "replicator.toml", source=str(tmp_path / "dms"), staging=str(tmp_path / "st")
    )
    out = run_cli("check", "-c", str(cfg))
    assert out.returncode == 2
    assert "is not a folder" in out.stdout
