"""The package layout holds: no import cycle between replicator's modules, and code outside a package
imports only the names the package exports (its ``__init__``'s ``__all__``).

Both checks read the source with ``ast``; nothing is imported. The rules:

- An edge ``a -> b`` is any import of ``b`` in ``a``: in the module body, ``if TYPE_CHECKING:`` blocks
  (mypy and readers follow those too) and inside functions (a deferred import, kept for a driver or a heavy
  module, must not hide a cycle either). Importing ``p.q.m`` also imports the packages ``p.q`` and ``p``
  (their ``__init__``) unless ``a`` is inside them: their eager re-exports are edges.
- A package's API is its ``__all__``; a module listed there (``from replicator.obs import metrics``) is
  API with its public names. Code inside the package may import any of its modules. A test mirrors the
  package it tests (``tests/sources/dms/`` tests ``replicator.sources.dms``) and is inside it for this
  rule. ``INTERNAL_IMPORTS_ALLOWED`` is the documented allow-list; it is empty: the composition root,
  ``replicator/app.py``, names the modules it opens as strings in its registries (``WAREHOUSES``,
  ``SOURCES``), each a warehouse module or source package with its opener, which the last test checks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "replicator"
CHECKED = ("replicator", "tests", "scripts")
# (importing file, relative to the root) -> modules it may import internals of, with the reason.
INTERNAL_IMPORTS_ALLOWED: dict[str, set[str]] = {}


@dataclass(frozen=True)
class Module:
    name: str  # dotted
    path: Path
    is_package: bool


def find_modules(root: Path, package: str = PACKAGE) -> dict[str, Module]:
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        out[".".join(parts)] = Module(".".join(parts), path, is_package)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(body: list[ast.stmt], *, functions: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements of a module body; into function bodies only when ``functions``."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if functions:
                yield from _imports(node.body, functions=True)
        else:  # if/try/with/for/class bodies (and except handlers) run at import time
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    yield from _imports(inner, functions=functions)


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imported(
    tree: ast.Module, importer: str, is_package: bool, *, functions: bool = False
) -> Iterator[tuple[str, str | None, int]]:
    """(module, name or None, line) for each import; ``from m import n`` gives (m, n)."""
    for node in _imports(tree.body, functions=functions):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        else:
            module = _absolute(node, importer, is_package)
            for alias in node.names:
                yield module, alias.name, node.lineno


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = find_modules(root, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for m in modules.values():
        tree = ast.parse(m.path.read_text(), str(m.path))
        for target, name, _ in imported(tree, m.name, m.is_package, functions=True):
            if not _inside(target, package):
                continue
            targets = [target]
            if name is not None and f"{target}.{name}" in modules:
                targets.append(f"{target}.{name}")
            for t in targets:
                parts = t.split(".")
                for i in range(1, len(parts) + 1):  # the module and every package above it
                    dep = ".".join(parts[:i])
                    if (
                        dep in modules
                        and dep != m.name
                        and not (modules[dep].is_package and _inside(m.name, dep))
                    ):
                        graph[m.name].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_one_cycle(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, for the failure message."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


def exports(module: Module) -> set[str] | None:
    """The names in a module's ``__all__`` (a literal list or tuple of strings), None if it has none."""
    tree = ast.parse(module.path.read_text())
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
            return {e.value for e in node.value.elts if isinstance(e, ast.Constant)}  # type: ignore[attr-defined]
    return None


def _as_module(path: Path, root: Path, modules: dict[str, Module], package: str) -> str:
    """The dotted name a file counts as: a test stands inside the package it mirrors."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] == "tests" and len(parts) > 2:
        mirrored = ".".join([package, *parts[1:-1]])
        if mirrored in modules and modules[mirrored].is_package:
            return f"{mirrored}.{parts[-1]}"
    return ".".join(parts)


def export_violations(root: Path, package: str = PACKAGE, checked: tuple[str, ...] = CHECKED) -> list[str]:
    modules = find_modules(root, package)
    packages = {name: m for name, m in modules.items() if m.is_package and name != package}
    api = {name: exports(m) or set() for name, m in packages.items()}
    problems = []
    files = sorted(p for d in checked if (root / d).is_dir() for p in (root / d).rglob("*.py"))
    for path in files:
        rel = str(path.relative_to(root))
        me = _as_module(path, root, modules, package)
        tree = ast.parse(path.read_text(), rel)
        is_package = path.name == "__init__.py"
        for target, name, line in imported(tree, me, is_package, functions=True):
            if not _inside(target, package):
                continue
            # the innermost package holding the target that the importer is outside of
            owner = max(
                (p for p in packages if _inside(target, p) and not _inside(me, p)), key=len, default=None
            )
            if owner is None or target in INTERNAL_IMPORTS_ALLOWED.get(rel, set()):
                continue
            if target == owner:  # from package import name
                if name is None or name in api[owner] or f"{owner}.{name}" in packages:
                    continue
                problems.append(f"{rel}:{line}: {name} is not exported by {owner} (its __all__)")
                continue
            # from package.module import name: only if the module itself is exported by its package
            first = target[len(owner) + 1 :].split(".")[0]
            if first in api[owner] and f"{owner}.{first}" in modules:
                public = exports(modules[target]) if target in modules else None
                if name is None or (name in public if public is not None else not name.startswith("_")):
                    continue
            problems.append(
                f"{rel}:{line}: imports {target}{'.' + name if name else ''} from outside {owner}; "
                f"import it from {owner} (add it to its __all__ if it is API)"
            )
    return problems


# -- the checks on this repository ---------------------------------------------------------------------


def test_no_import_cycle_between_replicator_modules() -> None:
    found = cycles(import_graph(ROOT))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_code_outside_a_package_imports_only_its_exports() -> None:
    problems = export_violations(ROOT)
    assert not problems, "\n".join(problems)


def test_every_package_says_what_it_does_and_exports() -> None:
    for m in find_modules(ROOT).values():
        if m.is_package and m.name != PACKAGE:
            tree = ast.parse(m.path.read_text())
            assert ast.get_docstring(tree), f"{m.path}: no docstring"
            assert exports(m), f"{m.path}: no __all__"


def test_importing_sources_loads_no_database_driver() -> None:
    import subprocess
    import sys

    code = (
        "import sys, replicator.sources, replicator.warehouses, replicator.app\n"
        "drivers = ('psycopg2', 'pymssql', 'redshift_connector', 'duckdb')\n"
        "print(sorted(m for m in drivers if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# -- the checker itself, on small synthetic trees -----------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_two_modules_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "replicator/__init__.py": "",
            "replicator/a.py": "from replicator.b import x\n",
            "replicator/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from replicator.a import y\n",
            "replicator/c.py": "from replicator.a import y\n",  # into the cycle, not part of it
        },
    )
    assert cycles(import_graph(root)) == [["replicator.a", "replicator.b", "replicator.a"]]


def test_a_cycle_through_a_function_local_import_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "replicator/__init__.py": "",
            "replicator/a.py": "from replicator.b import x\n",
            "replicator/b.py": "x = 1\ndef later():\n    from replicator.a import y\n",
        },
    )
    assert cycles(import_graph(root)) == [["replicator.a", "replicator.b", "replicator.a"]]


def test_a_cycle_through_a_package_reexport_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "replicator/__init__.py": "",
            "replicator/p/__init__.py": "from replicator.p.m import X\n__all__ = ['X']\n",
            "replicator/p/m.py": "from replicator.q.n import Y\nX = 1\n",
            "replicator/q/__init__.py": "",
            "replicator/q/n.py": "from replicator.p import X\nY = 2\n",
        },
    )
    found = cycles(import_graph(root))
    assert len(found) == 1 and set(found[0]) == {"replicator.p", "replicator.p.m", "replicator.q.n"}


def test_a_package_importing_its_own_modules_is_no_cycle(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "replicator/__init__.py": "",
            "replicator/p/__init__.py": "from replicator.p.m import X\n__all__ = ['X']\n",
            "replicator/p/m.py": "from replicator.p.n import Y\nX = Y\n",
            "replicator/p/n.py": "Y = 1\n",
        },
    )
    assert cycles(import_graph(root)) == []


def test_an_import_of_an_unexported_name_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "replicator/__init__.py": "",
            "replicator/p/__init__.py": '"""P."""\nfrom replicator.p.m import X\n__all__ = ["X", "sub"]\n',
            "replicator/p/m.py": "X = 1\nY = 2\n",
            "replicator/p/sub.py": "Z = 3\n_HIDDEN = 4\n",
            "replicator/p/inner.py": "from replicator.p.m import Y\n",  # inside the package: fine
            "replicator/top.py": (
                "from replicator.p import X\n"  # exported: fine
                "from replicator.p.sub import Z\n"  # an exported module's public name: fine
                "def f():\n    from replicator.p.m import Y\n"  # function-local imports count here
                "from replicator.p import Y\n"
                "from replicator.p.sub import _HIDDEN\n"
            ),
            "tests/p/test_m.py": "from replicator.p.m import Y\n",  # mirrors replicator.p: inside
            "tests/test_top.py": "from replicator.p.m import X\n",
        },
    )
    assert export_violations(root) == [
        "replicator/top.py:4: imports replicator.p.m.Y from outside replicator.p; "
        "import it from replicator.p (add it to its __all__ if it is API)",
        "replicator/top.py:5: Y is not exported by replicator.p (its __all__)",
        "replicator/top.py:6: imports replicator.p.sub._HIDDEN from outside replicator.p; "
        "import it from replicator.p (add it to its __all__ if it is API)",
        "tests/test_top.py:1: imports replicator.p.m.X from outside replicator.p; "
        "import it from replicator.p (add it to its __all__ if it is API)",
    ]


@pytest.mark.parametrize("relative", [True, False])
def test_relative_imports_resolve_like_absolute_ones(tmp_path: Path, relative: bool) -> None:
    line = "from ..q.n import Y\n" if relative else "from replicator.q.n import Y\n"
    root = _tree(
        tmp_path,
        {
            "replicator/__init__.py": "",
            "replicator/p/__init__.py": "",
            "replicator/p/m.py": line,
            "replicator/q/__init__.py": "__all__ = []\n",
            "replicator/q/n.py": "from replicator.p.m import Y\n",
        },
    )
    assert cycles(import_graph(root)) == [["replicator.p.m", "replicator.q.n", "replicator.p.m"]]


def test_every_configured_kind_has_one_registered_module_that_opens_it() -> None:
    import importlib
    import typing

    from replicator import app, config

    kinds = {
        "warehouse": (config.WarehouseConfig, app.WAREHOUSES, "open_warehouse"),
        "source": (config.SourceConfig, app.SOURCES, "open_source"),
    }
    for section, (cls, registry, opener) in kinds.items():
        allowed = set(typing.get_args(typing.get_type_hints(cls)["kind"]))
        assert set(registry) == allowed, f"[{section}] kind: config has {allowed}, app {set(registry)}"
        for module in registry.values():
            assert callable(getattr(importlib.import_module(module), opener)), f"{module} has no {opener}"
