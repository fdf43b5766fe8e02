"""The test suite's own shape: test modules share code through tests/helpers/ and fixtures through the
conftest.py of their folder (or a parent's), never by importing another test module (which also runs, or
silently re-exports, that module's fixtures and tests)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imports_of_test_modules(root: Path) -> list[str]:
    """``path: module`` for every import of a ``test_*`` module by a file under ``root`` (benchmarks
    included; a script run by a child process, ``python -c "from tests... import"``, is text, not an
    import)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_"):
                    found.append(f"{path.relative_to(root)}: {name}")
    return found


def test_no_test_module_imports_another() -> None:
    assert imports_of_test_modules(TESTS) == []


def test_the_check_finds_an_import_of_a_test_module(tmp_path: Path) -> None:
    (tmp_path / "views").mkdir()
    (tmp_path / "views" / "test_a.py").write_text("from tests.views.test_b import TABLES\n")
    (tmp_path / "test_c.py").write_text("import tests.views.test_b\nfrom tests.views import test_b\n")
    (tmp_path / "test_d.py").write_text("from tests.helpers.views import TABLES\n")
    assert imports_of_test_modules(tmp_path) == [
        "test_c.py: tests.views.test_b",
        "test_c.py: tests.views.test_b",
        "views/test_a.py: tests.views.test_b",
    ]
