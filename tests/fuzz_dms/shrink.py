"""Shrinking a failing DMS scenario: delta debugging (ddmin) over its operations, then over the rows of the
file operations left. What is kept is a *keep spec* (``3,7.0,7.2``: operation 3 whole, rows 0 and 2 of
operation 7), so the shrunk case runs again from its seed: ``scripts/fuzz_dms.sh --seed S --keep SPEC``.
(The same spec format as the PostgreSQL fuzzer's, ``tests/fuzz``; the code is kept apart on purpose.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from tests.fuzz_dms.feed import CdcFile, LoadFile, Op, Scenario, TxnFile

T = TypeVar("T")
Unit = tuple[int, int | None]  # (operation index, row index or None for the whole operation)


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool], deadline: float) -> list[T]:
    """Drop chunks of ``items`` while the rest still fails, in finer chunks when none can go; at ``deadline``
    (``time.monotonic()``) the smallest failing list so far."""
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


def apply_keep(sc: Scenario, units: Sequence[Unit]) -> Scenario:
    """``sc`` with only ``units`` kept (a file operation with none of its rows kept goes)."""
    whole = {i for i, r in units if r is None}
    rows: dict[int, list[int]] = {}
    for i, r in units:
        if r is not None:
            rows.setdefault(i, []).append(r)
    ops: list[Op] = []
    for i, op in enumerate(sc.ops):
        if i in whole:
            ops.append(op)
        elif i in rows and isinstance(op, (LoadFile, CdcFile, TxnFile)):
            ops.append(replace(op, rows=tuple(op.rows[j] for j in sorted(rows[i]))))  # type: ignore[arg-type]
    return replace(sc, ops=tuple(ops))


def keep_spec(units: Sequence[Unit]) -> str:
    ordered = sorted(units, key=lambda u: (u[0], -1 if u[1] is None else u[1]))
    return ",".join(str(i) if r is None else f"{i}.{r}" for i, r in ordered)


def parse_keep(spec: str) -> list[Unit]:
    out: list[Unit] = []
    for part in spec.split(","):
        i, _, r = part.strip().partition(".")
        out.append((int(i), int(r) if r else None))
    return out


def shrink(sc: Scenario, fails: Callable[[Scenario], bool], seconds: float) -> tuple[Scenario, str]:
    """The smallest part of ``sc`` found to fail within ``seconds``, and its keep spec."""
    deadline = time.monotonic() + seconds
    ops: list[Unit] = [(i, None) for i in range(len(sc.ops))]
    kept = ddmin(ops, lambda units: fails(apply_keep(sc, units)), deadline)
    units: list[Unit] = []
    for i, _ in kept:
        op = sc.ops[i]
        if isinstance(op, (LoadFile, CdcFile, TxnFile)) and len(op.rows) > 1:
            units.extend((i, r) for r in range(len(op.rows)))
        else:
            units.append((i, None))
    if len(units) > len(kept):  # some file operation has rows to drop
        units = ddmin(units, lambda u: fails(apply_keep(sc, u)), deadline)
    return apply_keep(sc, units), keep_spec(units)
