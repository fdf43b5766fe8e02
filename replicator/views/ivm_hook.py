"""The merge hook keeping incrementally maintained views (``replicator.views.ivm``) in step with each batch,
inside the merge transaction."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from replicator.model import OP_COLUMN, SOFT_DELETED, UNCHANGED_COLUMN, TableId
from replicator.sql import quote_ident, quote_literal
from replicator.views.ivm import IvmBuilder
from replicator.warehouses import MergeContext

# A never measured recompute is tried once the incremental path is expected to take at least this long.
EXPLORE_SECONDS = 0.01
_WEIGHT = 0.5  # of the newest measurement in the running estimates


@dataclass(slots=True)
class Costs:
    """A view's measured maintenance costs: the last incremental runs as (staged rows, seconds), from which
    a line ``fixed + per_row * rows`` estimates a batch (least squares, never negative), and a running
    estimate of one recompute's seconds."""

    runs: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=16))
    recompute: float | None = None

    def incremental(self, rows: int) -> float | None:
        """Estimated seconds of the incremental path for ``rows`` staged rows (None before any run)."""
        if not self.runs:
            return None
        n = len(self.runs)
        mx = sum(r for r, _ in self.runs) / n
        my = sum(s for _, s in self.runs) / n
        var = sum((r - mx) ** 2 for r, _ in self.runs)
        slope = sum((r - mx) * (s - my) for r, s in self.runs) / var if var else 0.0
        if var == 0 or slope < 0:  # one batch size only (or noise): all of it scales with the rows
            return my / max(mx, 1.0) * rows
        fixed = my - slope * mx
        if fixed < 0:
            return my / max(mx, 1.0) * rows
        return fixed + slope * rows

    def choose(self, rows: int) -> tuple[str, str]:
        """(``incremental`` or ``recompute``, why) for a batch of ``rows`` staged rows."""
        guess = self.incremental(rows)
        if guess is None:
            return "incremental", "not measured yet"
        if self.recompute is None:
            if guess >= EXPLORE_SECONDS:
                return "recompute", f"incremental estimated {guess:.3f} s; measuring a recompute once"
            return "incremental", f"incremental estimated {guess:.3f} s"
        if guess > self.recompute:
            return "recompute", f"incremental estimated {guess:.3f} s > recompute {self.recompute:.3f} s"
        return "incremental", f"incremental estimated {guess:.3f} s <= recompute {self.recompute:.3f} s"

    def measured(self, mode: str, seconds: float, rows: int) -> None:
        if mode == "incremental":
            self.runs.append((rows, seconds))
        else:
            old = self.recompute
            self.recompute = seconds if old is None else _WEIGHT * seconds + (1 - _WEIGHT) * old


class IvmHook:
    """``MergeHook`` keeping every incremental view that reads the merged table in step with it.

    Per view and batch it first chooses, from measured costs (``Costs``), between maintaining the state
    incrementally and recomputing it from the tables after the merge (a large batch on a small table), so
    the incremental path is never slower than a full refresh; ``on_maintained`` hears which, and why.

    Per view and batch, the state takes ``aggregate(new images) - aggregate(old images)`` of the touched
    keys, usually in one ``MERGE`` (``IvmBuilder.combine``):

    - Old images: on warehouses whose merge can copy them aside (``wants_old_images``; PostgreSQL), the
      merge's copy in ``ctx.old_images``, so the touched rows are located once, by the merge. Elsewhere
      (DuckDB) they are read from the target before the merge through a semi-join with the staging table.
    - New images: the staged rows themselves (not deletes) when they equal what the merge wrote in every
      column the view reads: not so for a soft-delete table (a deleted row stays), a column the batch lacks
      (the merge sets it NULL) or a column some row left unchanged (the merge kept the target's value);
      then they are read from the target after the merge, through the same semi-join.

    So the one statement runs in ``before_merge`` when old images are read there and the staged rows are
    the new images (both known before the merge), else in ``after_merge``; only when the old images come
    from the target and the new ones too are there two (old before, new after). All of it runs in the merge
    transaction, so readers never see a half-updated state. A group whose row count reaches 0 is deleted
    (and re-inserted by a later statement if new images land in it).

    ``on_maintained(view, mode, seconds, why)`` is called after the view's state was updated (still inside the
    transaction; the caller records it); ``seconds`` covers all of the hook's work for that view.
    """

    def __init__(
        self,
        builders: list[IvmBuilder],
        *,
        on_maintained: Callable[[TableId, str, float, str], None] | None = None,
        by_cost: bool = True,
    ) -> None:
        """``by_cost=False``: always incremental (tests of the incremental SQL itself)."""
        self.builders = builders
        self.on_maintained = on_maintained
        self.by_cost = by_cost
        self.costs: dict[TableId, Costs] = {}
        self._choice: dict[TableId, tuple[str, str]] = {}  # per view, for the open batch: (mode, why)
        self._before: dict[TableId, float] = {}  # seconds of before_merge, per view, for the open batch
        self._done: set[TableId] = set()  # views whose state took the whole batch in before_merge
        self._soft_delete: dict[TableId, bool] = {}  # per table: has the soft-delete column

    def _affected(self, table: TableId) -> list[IvmBuilder]:
        return [b for b in self.builders if table in b.plan.sources]

    def wants_old_images(self, ctx: MergeContext) -> bool:
        """Ask the merge to copy old images aside (only where the warehouse can; see ``SqlWarehouse``)."""
        return bool(self._affected(ctx.schema.table))

    def _touched(self, ctx: MergeContext, b: IvmBuilder, sign: int) -> str:
        """Aggregate of the touched keys' rows as the target holds them now."""
        return b.aggregate(touched=(ctx.schema.table, ctx.staging, ctx.schema.primary_key), sign=sign)

    def _staged_images(self, ctx: MergeContext, b: IvmBuilder, staged: frozenset[str] | None) -> str | None:
        """Aggregate of the staged rows as new images, or None when they cannot stand for what the merge
        writes (``staged``: see ``_staged_unchanged``)."""
        table, schema = ctx.schema.table, ctx.schema
        read = b.columns_read(table)
        names = {c.lower() for c in schema.column_names}
        if staged is None or read is None or not read <= names or read & staged:
            return None
        cols = ", ".join(quote_ident(c) for c in schema.column_names)
        op = quote_ident(OP_COLUMN)
        images = f"SELECT {cols} FROM {quote_ident(ctx.staging)} WHERE {op} <> 'D'"
        return b.aggregate(images=(table, images))

    def _staged_unchanged(self, ctx: MergeContext) -> frozenset[str] | None:
        """Columns listed in some upsert's ``_unchanged`` (lower case), or None for a soft-delete table."""
        table = ctx.schema.table
        if table not in self._soft_delete:
            self._soft_delete[table] = bool(
                ctx.query(
                    "SELECT 1 FROM information_schema.columns"
                    f" WHERE table_schema = {quote_literal(table.schema)}"
                    f" AND table_name = {quote_literal(table.name)}"
                    f" AND column_name = {quote_literal(SOFT_DELETED)}"
                )
            )
        if self._soft_delete[table]:
            return None
        u, op = quote_ident(UNCHANGED_COLUMN), quote_ident(OP_COLUMN)
        rows = ctx.query(
            f"SELECT DISTINCT c FROM (SELECT unnest({u}) AS c FROM {quote_ident(ctx.staging)}"
            f" WHERE {op} <> 'D') AS x"
        )
        return frozenset(str(c).lower() for (c,) in rows if c is not None)

    def _choose(self, ctx: MergeContext, affected: list[IvmBuilder]) -> list[IvmBuilder]:
        """Choose per view for this batch; the views to maintain incrementally."""
        rows = ctx.manifest.rows
        if not self.by_cost:
            self._choice = {b.plan.view: ("incremental", "") for b in affected}
            return affected
        costs = self.costs
        self._choice = {b.plan.view: costs.setdefault(b.plan.view, Costs()).choose(rows) for b in affected}
        return [b for b in affected if self._choice[b.plan.view][0] == "incremental"]

    def before_merge(self, ctx: MergeContext) -> None:
        self._before.clear()
        self._done.clear()
        affected = self._choose(ctx, self._affected(ctx.schema.table))
        if not affected or ctx.old_images is not None:  # the merge copies the old images: all after it
            return
        started = time.perf_counter()
        staged = self._staged_unchanged(ctx)
        shared = (time.perf_counter() - started) / len(affected)  # the check serves every view
        for b in affected:
            started = time.perf_counter()
            deltas = [self._touched(ctx, b, -1)]
            new = self._staged_images(ctx, b, staged)
            if new is not None:
                deltas.append(new)
                self._done.add(b.plan.view)
            ctx.execute(b.merge_delta(b.combine(deltas)))
            self._before[b.plan.view] = time.perf_counter() - started + shared

    def after_truncate(self, ctx: MergeContext) -> None:
        """The table was emptied (in the merge transaction): recompute what reads it."""
        for b in self._affected(ctx.schema.table):
            started = time.perf_counter()
            for statement in b.recompute():
                ctx.execute(statement)
            self._report(b, "recompute", time.perf_counter() - started, "the table was truncated")

    def after_merge(self, ctx: MergeContext) -> None:
        every = self._affected(ctx.schema.table)
        for b in every:
            mode, why = self._choice.get(b.plan.view, ("incremental", ""))
            if mode == "recompute":
                started = time.perf_counter()
                for statement in b.recompute():
                    ctx.execute(statement)
                seconds = time.perf_counter() - started
                self.costs[b.plan.view].measured("recompute", seconds, ctx.manifest.rows)
                self._report(b, "recompute", seconds, why)
        affected = [b for b in every if self._choice.get(b.plan.view, ("incremental",))[0] == "incremental"]
        pending = [b for b in affected if b.plan.view not in self._done]
        started = time.perf_counter()
        # Without copied old images, a pending view's new images are the target's (before_merge took the
        # staged ones where it could).
        staged = self._staged_unchanged(ctx) if pending and ctx.old_images is not None else None
        shared = (time.perf_counter() - started) / len(pending) if pending else 0.0
        for b in affected:
            started = time.perf_counter()
            if b in pending:
                deltas = []
                if ctx.old_images is not None:
                    old = f"SELECT * FROM {quote_ident(ctx.old_images)}"
                    deltas.append(b.aggregate(images=(ctx.schema.table, old), sign=-1))
                deltas.append(self._staged_images(ctx, b, staged) or self._touched(ctx, b, 1))
                ctx.execute(b.merge_delta(b.combine(deltas)))
            seconds = time.perf_counter() - started + (shared if b in pending else 0.0)
            seconds += self._before.pop(b.plan.view, 0.0)
            self.costs.setdefault(b.plan.view, Costs()).measured("incremental", seconds, ctx.manifest.rows)
            self._report(b, "incremental", seconds, self._choice.get(b.plan.view, ("", ""))[1])

    def _report(self, b: IvmBuilder, mode: str, seconds: float, why: str) -> None:
        if self.on_maintained is not None:
            self.on_maintained(b.plan.view, mode, seconds, why)
