"""Incremental maintenance of aggregate views on PostgreSQL and DuckDB, inside the merge transaction.

A view of the form ``SELECT keys, SUM/COUNT/AVG(...) FROM t [JOIN d ON ...] WHERE ... GROUP BY keys`` (inner
joins, each table once, deterministic expressions) is kept as a *state table* in the ``_replicator`` schema:
one row per group with ``_gk`` (the group's keys encoded as text, so groups with NULL keys still match with a
plain, hashable ``=``), the keys ``_k<i>``, per aggregate a sum ``_s<j>`` and a count of non-null values
``_c<j>``, and ``_n`` the group's row count. The view itself is a plain view over the state table.

Such a query is linear in each table it reads. A batch changes one table ``T``, so the change of every
group is ``Q[T := new images of the touched keys] - Q[T := old images of the touched keys]`` with the other
tables as they are. The merge hook (``replicator.views.ivm_hook.IvmHook``) adds that difference to the
state, usually in one ``MERGE`` (``combine`` of the negated old and the new aggregate); groups whose ``_n``
drops to 0 are deleted. A TRUNCATE batch (``after_truncate``) recomputes the state from the tables instead.

This module analyses views and builds statements; it runs nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import sqlglot
from sqlglot import exp

from replicator.model import TableId
from replicator.sql import quote_ident, quote_table
from replicator.views.graph import ViewDef
from replicator.views.redshift import is_mutable
from replicator.warehouses import STATE_SCHEMA

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

    def combine(self, deltas: list[str]) -> str:
        """One delta (a row per group, in state columns) adding up ``deltas``: the negated old and the new
        aggregate of a batch, merged into the state by one statement instead of one each."""
        if len(deltas) == 1:
            return deltas[0]
        cols = self.state_columns()
        groups = [quote_ident(c) for c in cols if c == "_gk" or c.startswith("_k")]
        sums = [
            f"SUM({quote_ident(c)})" if c.startswith("_s") else f"CAST(SUM({quote_ident(c)}) AS BIGINT)"
            for c in cols
            if c != "_gk" and not c.startswith("_k")
        ]
        names = [quote_ident(c) for c in cols if c != "_gk" and not c.startswith("_k")]
        items = [*groups, *(f"{e} AS {n}" for e, n in zip(sums, names, strict=True))]
        union = " UNION ALL ".join(f"({d})" for d in deltas)
        return f"SELECT {', '.join(items)} FROM ({union}) AS {_D} GROUP BY {', '.join(groups)}"

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
_D = quote_ident("_ivm_d")  # the union of deltas in ``combine``


def _group_key(keys: list[str]) -> str:
    """Text that equals for equal key tuples (NULLs included): each key length-prefixed, so no value can
    be mistaken for a separator, and ``n`` for NULL."""
    parts = [
        f"COALESCE(CAST(LENGTH(CAST({k} AS TEXT)) AS TEXT) || ':' || CAST({k} AS TEXT), 'n')" for k in keys
    ]
    return " || ".join(parts)


def parse_check(sql: str, dialect: str) -> None:
    """Parse generated SQL back (tests use it to prove the builders emit valid statements)."""
    sqlglot.parse_one(sql, read=dialect)
