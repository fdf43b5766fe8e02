"""Run the mutation check: ``python -m tests.mutants.run [--jobs N] [--head] [NAME ...]``.

For each mutant of ``tests.mutants.catalog`` (or the ones named): copy the repository to a scratch folder,
apply the mutant's edits there, run its tests there (the package is imported from the copy), and require
every one of them to fail. Exit status 0 when every mutant was killed, 1 when one survived (some named test
passed), 2 when a mutant could not be applied or its tests could not run as asked. The repository itself is
never written to.

``--head`` copies the last commit (``git archive``) instead of the working tree, e.g. while other edits are
in progress; ``--jobs`` runs that many mutants at once (each in its own copy, databases and temp folders
are per test).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.mutants.catalog import MUTANTS, Edit, Mutant

ROOT = Path(__file__).resolve().parents[2]


class NotApplicable(Exception):
    pass


def apply_edit(root: Path, edit: Edit) -> None:
    """Replace ``edit.old`` by ``edit.new`` in the copy at ``root``; refuse when it occurs a different number
    of times than the mutant states (the code moved: the mutant must be updated, not silently skipped)."""
    path = root / edit.path
    if not path.is_file():
        raise NotApplicable(f"{edit.path}: no such file")
    text = path.read_text()
    found = text.count(edit.old)
    if found != edit.count:
        raise NotApplicable(f"{edit.path}: the text to replace occurs {found} times, expected {edit.count}")
    path.write_text(text.replace(edit.old, edit.new))


def copy_repository(dest: Path, *, head: bool) -> None:
    """The tracked and untracked (not ignored) files of the working tree, or of HEAD with ``head``."""
    dest.mkdir(parents=True)
    if head:
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        return
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is simply absent
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # "killed" | "survived" | "error"
    detail: str
    seconds: float


def failed_tests(junit: Path) -> tuple[set[str], set[str]]:
    """(node ids that ran, node ids that failed) from a pytest JUnit report of module-level tests."""
    ran, failed = set(), set()
    for case in ET.parse(junit).iter("testcase"):
        module = case.get("classname", "")
        node = module.replace(".", "/") + ".py::" + case.get("name", "")
        if case.find("skipped") is not None:
            continue
        ran.add(node)
        if case.find("failure") is not None:
            failed.add(node)
    return ran, failed


def run_mutant(mutant: Mutant, scratch: Path, *, head: bool) -> Outcome:
    started = time.monotonic()
    root = scratch / mutant.name

    def outcome(status: str, detail: str) -> Outcome:
        return Outcome(mutant, status, detail, time.monotonic() - started)

    copy_repository(root, head=head)
    try:
        for edit in mutant.edits:
            apply_edit(root, edit)
    except NotApplicable as exc:
        return outcome("error", f"does not apply: {exc}")
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import replicator; print(replicator.__file__)"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not where.startswith(str(root)):
        return outcome("error", f"the copy's package is not the one imported ({where})")
    junit = root / ".mutant-junit.xml"
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header"]
    proc = subprocess.run(
        [*pytest, f"--basetemp={root / '.pytest-tmp'}", f"--junitxml={junit}", *mutant.tests],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1) or not junit.exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        return outcome("error", f"pytest exited {proc.returncode}:\n{tail}")
    ran, failed = failed_tests(junit)
    missing = [t for t in mutant.tests if t not in ran]
    if missing:
        return outcome("error", f"named tests that did not run: {missing}")
    passed = [t for t in mutant.tests if t not in failed]
    if passed:
        return outcome("survived", "these tests passed with the mutant in place: " + ", ".join(passed))
    return outcome("killed", f"{len(mutant.tests)} named tests failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--head", action="store_true", help="mutate the last commit, not the working tree")
    parser.add_argument("--list", action="store_true", help="print the mutants and their tests, run nothing")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutants {unknown}; known: {sorted(known)}")
    chosen = [known[n] for n in args.names] if args.names else list(MUTANTS)
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.breaks}")
            for t in m.tests:
                print(f"    {t}")
        return 0
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="replicator-mutants-") as tmp,
        ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool,
    ):
        outcomes = list(pool.map(lambda m: run_mutant(m, Path(tmp), head=args.head), chosen))
    worst = 0
    for o in outcomes:
        print(f"{o.status.upper():9} {o.mutant.name} ({o.seconds:.0f} s): {o.detail}")
        if o.status != "killed":
            print(f"          guarantee: {o.mutant.breaks}")
        worst = max(worst, {"killed": 0, "survived": 1, "error": 2}[o.status])
    killed = sum(o.status == "killed" for o in outcomes)
    print(f"{killed} of {len(outcomes)} mutants killed in {time.monotonic() - started:.0f} s")
    return worst


if __name__ == "__main__":
    sys.exit(main())
