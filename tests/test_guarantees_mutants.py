"""The mutation check stays meaningful: every mutant still applies to the current code and names tests that
exist. (``scripts/mutants.sh`` runs the mutants themselves; this runs in the ordinary suite, so a refactor
that moves the code a mutant patches fails here instead of silently disabling the mutant.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.mutants.catalog import MUTANTS, Edit, Mutant
from tests.mutants.run import NotApplicable, apply_edit

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_every_mutant_still_applies_to_the_current_code(mutant: Mutant) -> None:
    assert mutant.tests, "a mutant no test is named to catch guards nothing"
    for edit in mutant.edits:
        assert edit.old != edit.new
        text = (ROOT / edit.path).read_text()
        assert text.count(edit.old) == edit.count, (
            f"{mutant.name}: {edit.path} holds the text to replace {text.count(edit.old)} times, expected"
            f" {edit.count}; update the mutant to the code as it is now:\n{edit.old}"
        )


def test_mutant_names_are_unique_and_every_named_test_exists() -> None:
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
    wanted = sorted({t for m in MUTANTS for t in m.tests})
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *wanted],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stdout[-3000:] + listed.stderr[-3000:]
    collected = set(listed.stdout.split())
    assert [t for t in wanted if t not in collected] == []


def test_a_mutant_whose_text_moved_is_refused_not_skipped(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("x = 1\nx = 1\n")
    with pytest.raises(NotApplicable, match="occurs 0 times, expected 1"):
        apply_edit(tmp_path, Edit("m.py", "y = 1", "y = 2"))
    with pytest.raises(NotApplicable, match="occurs 2 times, expected 1"):
        apply_edit(tmp_path, Edit("m.py", "x = 1", "x = 2"))
    apply_edit(tmp_path, Edit("m.py", "x = 1", "x = 2", count=2))
    assert (tmp_path / "m.py").read_text() == "x = 2\nx = 2\n"
