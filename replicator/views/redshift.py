"""What keeps a Redshift materialized view from refreshing incrementally. Pure: reads the sqlglot tree.

Redshift refreshes a materialized view incrementally only when its query is SELECT / inner JOIN / WHERE /
GROUP BY with SUM, COUNT, MIN, MAX or AVG. Anything else makes every refresh a full recompute, which on a
large table is the difference between seconds and a long lock, so the replicator says so when it creates
the view.
"""

from __future__ import annotations

from sqlglot import exp

# Functions whose value changes without any data changing.
_MUTABLE = (exp.CurrentDate, exp.CurrentTimestamp, exp.CurrentTime, exp.Rand)
_MUTABLE_NAMES = {
    "getdate",
    "sysdate",
    "random",
    "now",
    "timeofday",
    "clock_timestamp",
    "statement_timestamp",
}


def is_mutable(node: exp.Expr) -> bool:
    """Whether ``node`` is a call whose value changes without data changing (today, now, random)."""
    if isinstance(node, _MUTABLE):
        return True
    return isinstance(node, exp.Anonymous) and str(node.this).lower() in _MUTABLE_NAMES


def incremental_blockers(select: exp.Expr) -> list[str]:
    """Reasons (sorted, deduplicated) Redshift would recompute ``select`` in full on every refresh."""
    out: set[str] = set()
    for node in select.walk():
        if isinstance(node, exp.Join) and (node.side or node.kind in ("CROSS", "FULL")):
            out.add(f"{(node.side or node.kind).lower()} join")
        elif isinstance(node, exp.Union | exp.Intersect | exp.Except):
            out.add(f"set operation ({type(node).__name__.upper()})")
        elif isinstance(node, exp.Window):
            out.add("window function")
        elif isinstance(node, exp.AggFunc) and isinstance(node.this, exp.Distinct):
            out.add("DISTINCT aggregate")
        elif isinstance(node, exp.Select) and node.args.get("distinct"):
            out.add("SELECT DISTINCT")
        elif is_mutable(node):
            out.add(f"mutable function ({node.sql(dialect='redshift')})")
    return sorted(out)
