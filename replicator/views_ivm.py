"""Incremental maintenance of aggregate views on PostgreSQL and DuckDB, inside the merge transaction.

A view of the form ``SELECT keys, SUM/COUNT/AVG(...) FROM t [JOIN d ON ...] WHERE ... GROUP BY keys`` (inner
joins, each table once, deterministic expressions) is kept as a *state table* in the ``_replicator`` schema:
one row per group with ``_gk`` (the group's keys encoded as text, so groups with NULL keys still match with a
plain, hashable ``=``), the keys ``_k<i>``, per aggregate a sum ``_s<j>`` and a count of non-null values
``_c<j>``, and ``_n`` the group's row count. The view itself is a plain view over the state table.

Such a query is linear in each table it reads. A batch changes one table ``T``, so the change of every
group is ``Q[T := new images of the touched keys] - Q[T := old images of the touched keys]`` with the other
tables as they are. ``before_merge`` merges the negated aggregate of the old images into the state,
``after_merge`` the aggregate of the new ones (one ``MERGE`` each; see ``IvmHook``); groups whose ``_n``
drops to 0 are deleted. A TRUNCATE batch (``after_truncate``) recomputes the state from the tables instead.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

import sqlglot
from sqlglot import exp

from replicator.model import OP_COLUMN, UNCHANGED_COLUMN, TableId
from replicator.sql.dialect import SOFT_DELETED
from replicator.sql.ident import quote_ident, quote_literal, quote_table
from replicator.sql.views_redshift import is_mutable
from replicator.views import ViewDef
from replicator.warehouses.base import STATE_SCHEMA
from replicator.warehouses.sql_base import MergeContext

AggKind = Literal["sum", "count", "count_star", "avg"]


@dataclass(frozen=True, slots=True)
class IvmSql:
    """What differs between the engines that maintain views incrementally: data, not branches."""

    sqlglot_dialect: str
    avg_type: str  # AVG's result type: numeric in PostgreSQL, DOUBLE in DuckDB
    index_state: bool  # a unique index on _gk (the state MERGE probes it per group)


IVM_SQL = {
    "postgres": IvmSql("postgres", avg_type="numeric", index_state=True),
    # DuckDB joins by hash anyway, and its unique indexes refuse delete+insert of a key in one transaction.
    "duckdb": IvmSql("duckdb", avg_type="DOUBLE", index_state=False),
}


@dataclass(frozen=True, slots=True)
class Agg:
    kind: AggKind
    arg: exp.Expression | None


@dataclass(frozen=True, slots=True)
class IvmPlan:
    """How one view is maintained. ``outputs``: (output column, ``key``/``agg``, index)."""

    view: TableId
    select: exp.Select
    keys: tuple[exp.Expression, ...]
    aggs: tuple[Agg, ...]
    outputs: tuple[tuple[str, str, int], ...]
    sources: tuple[TableId, ...]

    @property
    def state(self) -> TableId:
        digest = hashlib.sha256(str(self.view).encode()).hexdigest()[:8]
        return TableId(STATE_SCHEMA, f"ivm_{digest}_{self.view.name[:40]}")


def analyse(view: ViewDef, base_tables: Collection[TableId]) -> tuple[IvmPlan | None, str]:
    """(plan, "") when ``view`` can be maintained incrementally, else (None, the reason it cannot)."""
    s = view.select
    if view.force_full:
        return None, "mode: full in the header"
    if not isinstance(s, exp.Select):
        return None, "set operation (UNION/INTERSECT/EXCEPT)"
    if any(is_mutable(n) for n in s.walk()):
        return None, "mutable function (its value changes without data changing)"
    for key, why in (
        ("with_", "WITH clause"),
        ("with", "WITH clause"),
        ("distinct", "SELECT DISTINCT"),
        ("having", "HAVING"),
        ("limit", "LIMIT"),
        ("offset", "OFFSET"),
        ("order", "ORDER BY"),
    ):
        if s.args.get(key):
            return None, why
    group = s.args.get("group")
    if group is None or not group.expressions:
        if s.find(exp.AggFunc) is None:
            return None, "not an aggregate (SELECT ... GROUP BY with SUM/COUNT/AVG)"
        return None, "no GROUP BY (a global aggregate keeps a row for an empty table)"
    if any(isinstance(n, exp.Window) for n in s.find_all(exp.Window)):
        return None, "window function"
    if any(isinstance(n, exp.Subquery | exp.Exists) for n in s.find_all(exp.Subquery, exp.Exists)):
        return None, "subquery"
    tables = list(s.find_all(exp.Table))
    ids = [TableId(t.db, t.name) for t in tables]
    if len(set(ids)) != len(ids):
        return None, "a table is read twice (self join)"
    if not set(ids) <= set(base_tables):
        return None, "reads another view"
    for j in s.args.get("joins") or []:
        if j.side or j.kind not in ("", "INNER") or j.args.get("using") or j.args.get("on") is None:
            return None, "outer, cross or USING join (only inner joins with ON)"
    if any(c.args.get("db") for c in s.find_all(exp.Column)):
        return None, "schema-qualified column reference (use table aliases)"
    keys = tuple(group.expressions)
    if any(isinstance(k, exp.Literal) for k in keys):
        return None, "GROUP BY by position"
    aggs: list[Agg] = []
    outputs: list[tuple[str, str, int]] = []
    for p in s.expressions:
        name = p.alias_or_name
        body = p.unalias()
        if not name:
            return None, f"output {p.sql()!r} needs a name (AS ...)"
        if body in keys:
            outputs.append((name, "key", keys.index(body)))
            continue
        agg = _aggregate(body)
        if agg is None:
            return None, f"output {name!r} is neither a GROUP BY key nor SUM/COUNT/AVG of an expression"
        outputs.append((name, "agg", len(aggs)))
        aggs.append(agg)
    return IvmPlan(view.name, s, keys, tuple(aggs), tuple(outputs), tuple(ids)), ""


def _aggregate(body: exp.Expression) -> Agg | None:
    if isinstance(body, exp.Count):
        arg = body.this
        if isinstance(arg, exp.Distinct):
            return None
        return Agg("count_star", None) if arg is None or isinstance(arg, exp.Star) else Agg("count", arg)
    if isinstance(body, exp.Sum | exp.Avg):
        if isinstance(body.this, exp.Distinct) or body.find(exp.AggFunc) is not body:
            return None
        return Agg("sum" if isinstance(body, exp.Sum) else "avg", body.this)
    return None


# -- SQL -------------------------------------------------------------------------------------------------


class IvmBuilder:
    """Statements maintaining one plan in one engine. Pure: returns text."""

    def __init__(self, plan: IvmPlan, sql: IvmSql) -> None:
        self.plan = plan
        self.sql = sql

    def _r(self, e: exp.Expression) -> str:
        return e.sql(dialect=self.sql.sqlglot_dialect)

    def state_columns(self) -> list[str]:
        cols = ["_gk", *(f"_k{i}" for i in range(len(self.plan.keys)))]
        for j, a in enumerate(self.plan.aggs):
            if a.kind in ("sum", "avg"):
                cols.append(f"_s{j}")
            if a.kind in ("sum", "avg", "count"):
                cols.append(f"_c{j}")
        return [*cols, "_n"]

    def aggregate(
        self,
        *,
        touched: tuple[TableId, str, tuple[str, ...]] | None = None,
        images: tuple[TableId, str] | None = None,
        sign: int = 1,
    ) -> str:
        """The state rows of the query (one per group). With ``touched`` = (table, staging table, its
        primary key): only the rows it contributes from that table's rows whose key is in the staging table
        (a semi-join the engine answers through the primary key). With ``images`` = (table, query): the
        rows it contributes when that table holds only the query's rows. ``sign`` -1 negates the sums and
        counts."""
        s = self.plan.select
        if images is not None:
            s = s.copy()
            table, query = images
            node = self._table_node(s, table)
            sub = exp.Subquery(this=sqlglot.parse_one(query, read=self.sql.sqlglot_dialect))
            node.replace(exp.alias_(sub, exp.to_identifier(node.alias or node.name), table=True))
        keys = [self._r(k) for k in self.plan.keys]
        neg = "-" if sign < 0 else ""
        items = [f"{_group_key(keys)} AS {quote_ident('_gk')}"]
        items += [f"{k} AS {quote_ident(f'_k{i}')}" for i, k in enumerate(keys)]
        for j, a in enumerate(self.plan.aggs):
            arg = self._r(a.arg) if a.arg is not None else ""
            if a.kind in ("sum", "avg"):
                items.append(f"{neg}COALESCE(SUM({arg}), 0) AS {quote_ident(f'_s{j}')}")
            if a.kind in ("sum", "avg", "count"):
                items.append(f"{neg}COUNT({arg}) AS {quote_ident(f'_c{j}')}")
        items.append(f"{neg}COUNT(*) AS {quote_ident('_n')}")
        parts = [f"SELECT {', '.join(items)}", self._r(_from(s))]
        parts += [self._r(j) for j in s.args.get("joins") or []]
        where = s.args.get("where")
        conditions = [f"({self._r(where.this)})"] if where is not None else []
        if touched is not None:
            conditions.append(self._semi_join(*touched))
        if conditions:
            parts.append("WHERE " + " AND ".join(conditions))
        parts.append(f"GROUP BY {', '.join(keys)}")
        return " ".join(parts)

    def _table_node(self, select: exp.Select, table: TableId) -> exp.Table:
        for t in select.find_all(exp.Table):
            if TableId(t.db, t.name) == table:
                return t
        raise ValueError(f"{self.plan.view} does not read {table}")

    def columns_read(self, table: TableId) -> frozenset[str] | None:
        """The columns of ``table`` the view reads, or None when that cannot be told (a column without
        table alias in a view over several tables)."""
        node = self._table_node(self.plan.select, table)
        alias = node.alias or node.name
        several = len(self.plan.sources) > 1
        names = set()
        for c in self.plan.select.find_all(exp.Column):
            if not c.table and several:
                return None
            if not c.table or c.table.lower() == alias.lower():
                names.add(c.name.lower())
        return frozenset(names)

    def _semi_join(self, table: TableId, staging: str, primary_key: tuple[str, ...]) -> str:
        """``EXISTS`` restricting ``table`` (under its alias in the view) to the staged keys."""
        t = self._table_node(self.plan.select, table)
        alias = quote_ident(t.alias or t.name)
        on = " AND ".join(f"{_S}.{quote_ident(k)} = {alias}.{quote_ident(k)}" for k in primary_key)
        return f"EXISTS (SELECT 1 FROM {quote_ident(staging)} AS {_S} WHERE {on})"

    def create(self) -> list[str]:
        """Build the state table from the tables as they are and the view over it (after a drop)."""
        state = quote_table(self.plan.state)
        view = self.plan.view
        statements = [
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STATE_SCHEMA)}",
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(view.schema)}",
            f"CREATE TABLE {state} AS {self.aggregate()}",
        ]
        if self.sql.index_state:
            index = quote_ident(f"{self.plan.state.name[:50]}_gk")
            statements.append(f"CREATE UNIQUE INDEX {index} ON {state} ({quote_ident('_gk')})")
        statements.append(f"CREATE VIEW {quote_table(view)} AS {self.view_select()}")
        return statements

    def drop(self) -> list[str]:
        return [
            f"DROP VIEW IF EXISTS {quote_table(self.plan.view)} CASCADE",
            f"DROP TABLE IF EXISTS {quote_table(self.plan.state)} CASCADE",
        ]

    def view_select(self) -> str:
        cols = []
        for name, kind, i in self.plan.outputs:
            if kind == "key":
                expr = quote_ident(f"_k{i}")
            else:
                a = self.plan.aggs[i]
                s, c = quote_ident(f"_s{i}"), quote_ident(f"_c{i}")
                expr = {
                    "count_star": quote_ident("_n"),
                    "count": c,
                    "sum": f"CASE WHEN {c} > 0 THEN {s} END",
                    "avg": f"CAST({s} AS {self.sql.avg_type}) / NULLIF({c}, 0)",
                }[a.kind]
            cols.append(f"{expr} AS {quote_ident(name)}")
        return f"SELECT {', '.join(cols)} FROM {quote_table(self.plan.state)}"

    def merge_delta(self, delta: str) -> str:
        """One statement adding ``delta`` (a query with one row per group, in state columns) to the state:
        matched groups are summed, new ones inserted, and groups left with no rows deleted."""
        state = quote_table(self.plan.state)
        cols = self.state_columns()
        sums = [c for c in cols if c != "_gk" and not c.startswith("_k")]
        q = quote_ident
        gk, n = q("_gk"), q("_n")
        return (
            f"MERGE INTO {state} AS s USING ({delta}) AS d ON s.{gk} = d.{gk}"
            f" WHEN MATCHED AND s.{n} + d.{n} = 0 THEN DELETE"
            f" WHEN MATCHED THEN UPDATE SET {', '.join(f'{q(c)} = s.{q(c)} + d.{q(c)}' for c in sums)}"
            f" WHEN NOT MATCHED THEN INSERT ({', '.join(map(q, cols))})"
            f" VALUES ({', '.join(f'd.{q(c)}' for c in cols)})"
        )

    def recompute(self) -> list[str]:
        """Replace the state with the query over the tables as they are (after a TRUNCATE)."""
        state = quote_table(self.plan.state)
        cols = ", ".join(quote_ident(c) for c in self.state_columns())
        return [f"DELETE FROM {state}", f"INSERT INTO {state} ({cols}) {self.aggregate()}"]


def _from(select: exp.Select) -> exp.Expression:
    node = select.args.get("from_") or select.args.get("from")
    assert node is not None, "analyse() admits only SELECTs with FROM"
    return node  # type: ignore[no-any-return]


_S = quote_ident("_ivm_s")  # the staging table's alias in the semi-join


def _group_key(keys: list[str]) -> str:
    """Text that equals for equal key tuples (NULLs included): each key length-prefixed, so no value can
    be mistaken for a separator, and ``n`` for NULL."""
    parts = [
        f"COALESCE(CAST(LENGTH(CAST({k} AS TEXT)) AS TEXT) || ':' || CAST({k} AS TEXT), 'n')" for k in keys
    ]
    return " || ".join(parts)


# -- the merge hook --------------------------------------------------------------------------------------


class IvmHook:
    """``MergeHook`` keeping every incremental view that reads the merged table in step with it.

    Per view and batch, two statements and no temp table: ``before_merge`` merges the negated aggregate
    of the touched keys' old images into the state, ``after_merge`` the aggregate of their new images.
    Old images are read from the target through a semi-join with the staging table (the primary-key
    index in PostgreSQL). New images are the staged rows themselves (not deletes) when they equal what
    the merge wrote in every column the view reads: not so for a soft-delete table (a deleted row stays),
    a column the batch lacks (the merge sets it NULL) or a column some row left unchanged (the merge kept
    the target's value); then they are read from the target like the old ones. Both run in the merge
    transaction, so readers never see the state between the two. A group whose row count reaches 0 is
    deleted (and re-inserted by ``after_merge`` if new images land in it).

    ``on_maintained(view, mode, seconds)`` is called after the view's state was updated (still inside the
    transaction; the caller records it); ``seconds`` covers both halves."""

    def __init__(
        self,
        builders: list[IvmBuilder],
        *,
        on_maintained: Callable[[TableId, str, float], None] | None = None,
    ) -> None:
        self.builders = builders
        self.on_maintained = on_maintained
        self._before: dict[TableId, float] = {}  # seconds of before_merge, per view, for the open batch
        self._soft_delete: dict[TableId, bool] = {}  # per table: has the soft-delete column

    def _affected(self, table: TableId) -> list[IvmBuilder]:
        return [b for b in self.builders if table in b.plan.sources]

    def _apply(
        self, ctx: MergeContext, b: IvmBuilder, sign: int, staged: frozenset[str] | None = None
    ) -> None:
        """Merge the touched keys' images into ``b``'s state; ``staged`` (after the merge only): the
        columns some staged row left unchanged, None when the staged rows cannot stand for the new images."""
        table, schema = ctx.schema.table, ctx.schema
        read = b.columns_read(table)
        names = {c.lower() for c in schema.column_names}
        if staged is not None and read is not None and read <= names and not read & staged:
            cols = ", ".join(quote_ident(c) for c in schema.column_names)
            op = quote_ident(OP_COLUMN)
            images = f"SELECT {cols} FROM {quote_ident(ctx.staging)} WHERE {op} <> 'D'"
            ctx.execute(b.merge_delta(b.aggregate(images=(table, images), sign=sign)))
            return
        touched = (table, ctx.staging, schema.primary_key)
        ctx.execute(b.merge_delta(b.aggregate(touched=touched, sign=sign)))

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

    def before_merge(self, ctx: MergeContext) -> None:
        self._before.clear()
        for b in self._affected(ctx.schema.table):
            started = time.perf_counter()
            self._apply(ctx, b, -1)
            self._before[b.plan.view] = time.perf_counter() - started

    def after_truncate(self, ctx: MergeContext) -> None:
        """The table was emptied (in the merge transaction): recompute what reads it."""
        for b in self._affected(ctx.schema.table):
            started = time.perf_counter()
            for statement in b.recompute():
                ctx.execute(statement)
            self._report(b, "recompute", time.perf_counter() - started)

    def after_merge(self, ctx: MergeContext) -> None:
        affected = self._affected(ctx.schema.table)
        if not affected:
            return
        started = time.perf_counter()
        staged = self._staged_unchanged(ctx)
        shared = (time.perf_counter() - started) / len(affected)  # the check serves every view
        for b in affected:
            started = time.perf_counter()
            self._apply(ctx, b, 1, staged)
            seconds = time.perf_counter() - started + shared + self._before.pop(b.plan.view, 0.0)
            self._report(b, "incremental", seconds)

    def _report(self, b: IvmBuilder, mode: str, seconds: float) -> None:
        if self.on_maintained is not None:
            self.on_maintained(b.plan.view, mode, seconds)


def parse_check(sql: str, dialect: str) -> None:
    """Parse generated SQL back (tests use it to prove the builders emit valid statements)."""
    sqlglot.parse_one(sql, read=dialect)
