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

from tests.fuzz.ops import Step, Txn, Workload

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
    return ",".join(
        str(s) if x is None else f"{s}.{x}" for s, x in sorted(units, key=lambda u: (u[0], u[1] or -1))
    )


def parse_keep(spec: str) -> list[Unit]:
    out: list[Unit] = []
    for part in spec.split(","):
        s, _, x = part.strip().partition(".")
        out.append((int(s), int(x) if x else None))
    return out


def shrink(w: Workload, fails: Callable[[Workload], bool], seconds: float) -> tuple[Workload, str]:
    """The smallest sub-workload of ``w`` found to fail within ``seconds``, and its keep spec."""
    deadline = time.monotonic() + seconds
    steps: list[Unit] = [(i, None) for i in range(len(w.steps))]
    kept = ddmin(steps, lambda units: fails(apply_keep(w, units)), deadline)
    # Second pass: statements of the transactions left (daemon events stay whole units).
    units: list[Unit] = []
    for i, _ in kept:
        step = w.steps[i]
        if isinstance(step, Txn) and len(step.stmts) > 1:
            units += [(i, j) for j in range(len(step.stmts))]
        else:
            units.append((i, None))
    if time.monotonic() < deadline and len(units) > len(kept):
        units = ddmin(units, lambda us: fails(apply_keep(w, us)), deadline)
    else:
        units = kept
    return apply_keep(w, units), keep_spec(units)
