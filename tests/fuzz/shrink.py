"""Shrinking: the smallest part of a failing workload that still fails, by delta debugging (ddmin).

Two passes, each bounded by a deadline: first over the steps (transactions and daemon events), then over
the statements inside the remaining transactions. What is kept is written as a ``keep`` spec (``3,7.0,7.2``:
step 3 whole, statements 0 and 2 of step 7), which ``apply_keep`` turns back into the workload, so the
shrunk case can be run again by seed (``scripts/fuzz.sh --seed S --keep SPEC``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from tests.fuzz.ops import Crash, Kill, Savepoint, Start, Step, Stmt, Txn, Wait, Workload

T = TypeVar("T")
Unit = tuple[int, int | None]  # (step index, statement index or None for the whole step)


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool], deadline: float) -> list[T]:
    """Zeller's ddmin over complements: drop chunks while the rest still fails; finer chunks when none can go.
    Stops at ``deadline`` (``time.monotonic()``) with the smallest failing list found so far."""
    current = list(items)
    n = 2
    while len(current) >= 2 and time.monotonic() < deadline:
        size = -(-len(current) // n)
        chunks = [current[i : i + size] for i in range(0, len(current), size)]
        for i in range(len(chunks)):
            if time.monotonic() >= deadline:
                return current
            rest = [x for j, c in enumerate(chunks) if j != i for x in c]
            if rest and fails(rest):
                current = rest
                n = max(n - 1, 2)
                break
        else:
            if n >= len(current):
                break
            n = min(2 * n, len(current))
    return current


def apply_keep(w: Workload, units: Sequence[Unit]) -> Workload:
    """The workload with only ``units`` kept (a transaction with none of its statements kept goes)."""
    whole = {s for s, x in units if x is None}
    parts: dict[int, list[int]] = {}
    for s, x in units:
        if x is not None:
            parts.setdefault(s, []).append(x)
    steps: list[Step] = []
    for i, step in enumerate(w.steps):
        if i in whole:
            steps.append(step)
        elif i in parts and isinstance(step, Txn):
            steps.append(replace(step, stmts=tuple(step.stmts[j] for j in sorted(parts[i]))))
    return replace(w, steps=tuple(steps))


def keep_spec(units: Sequence[Unit]) -> str:
    """``3,7.0,7.2,10-14``: whole steps (runs of them as ranges) and single statements of a step."""
    parts: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run.clear()

    for s, x in sorted(units, key=lambda u: (u[0], -1 if u[1] is None else u[1])):
        if x is None and (not run or run[-1] == s - 1):
            run.append(s)
            continue
        flush()
        if x is None:
            run.append(s)
        else:
            parts.append(f"{s}.{x}")
    flush()
    return ",".join(parts)


def parse_keep(spec: str) -> list[Unit]:
    out: list[Unit] = []
    for part in spec.split(","):
        s, _, x = part.strip().partition(".")
        if "-" in s:
            a, _, b = s.partition("-")
            out += [(i, None) for i in range(int(a), int(b) + 1)]
        else:
            out.append((int(s), int(x) if x else None))
    return out


def _tables(s: Stmt) -> set[str]:
    if isinstance(s, Savepoint):
        return {t for x in s.stmts for t in _tables(x)}
    return {s.table}


def _statements(w: Workload, units: Sequence[Unit], keep: Callable[[Stmt], bool]) -> list[Unit]:
    """``units`` with each whole transaction split into its statements, those ``keep`` refuses left out."""
    out: list[Unit] = []
    for i, x in units:
        step = w.steps[i]
        if x is None and isinstance(step, Txn):
            out += [(i, j) for j, stmt in enumerate(step.stmts) if keep(stmt)]
        elif x is None or keep(step.stmts[x]):  # type: ignore[union-attr]
            out.append((i, x))
    return out


def _by_step(units: Sequence[Unit]) -> list[list[Unit]]:
    groups: dict[int, list[Unit]] = {}
    for u in units:
        groups.setdefault(u[0], []).append(u)
    return list(groups.values())


def shrink(
    w: Workload, fails: Callable[[Workload], bool], seconds: float, *, tables: set[str] | None = None
) -> tuple[Workload, str]:
    """The smallest sub-workload of ``w`` found to fail within ``seconds``, and its keep spec.

    Two cheap guesses first, each one run: without the daemon events (most failures need no kill), and
    with only the statements on ``tables`` (those the failure names). Then ddmin over whole steps, then
    over single statements. Every candidate is run for real, so a guess that no longer fails is dropped.
    """
    deadline = time.monotonic() + seconds
    # Start stays where it is: without it the daemon would start at the end, and a shrunk case would
    # keep some other step only for starting it earlier (a column change waits for the initial copy).
    fixed: list[Unit] = [(i, None) for i, s in enumerate(w.steps) if isinstance(s, Start)]
    units: list[Unit] = [(i, None) for i in range(len(w.steps)) if (i, None) not in fixed]

    def run(us: Sequence[Unit]) -> bool:
        return fails(apply_keep(w, [*us, *fixed]))

    calm = [(i, x) for i, x in units if not isinstance(w.steps[i], Kill | Crash | Wait)]
    if len(calm) < len(units) and run(calm):
        units = calm
    if tables and time.monotonic() < deadline:
        focused = _statements(w, units, lambda s: bool(_tables(s) & tables))
        if focused and len(focused) < len(_statements(w, units, lambda s: True)) and run(focused):
            units = focused
    groups = ddmin(_by_step(units), lambda gs: run([u for g in gs for u in g]), deadline)
    units = [u for g in groups for u in g]
    if time.monotonic() < deadline:
        units = ddmin(_statements(w, units, lambda s: True), run, deadline)
    return apply_keep(w, [*units, *fixed]), keep_spec([*units, *fixed])
