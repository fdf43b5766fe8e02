"""Views under test: the sample catalog in schemas/ (its tables and views), and the fact and dimension
tables, views and Hypothesis strategies of the incremental-maintenance property tests."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from replicator.model import Change, Column, Op, Position, TableId, TableSchema
from replicator.schema import load_tables
from replicator.views import ViewCatalog, load_views, order_views, parse_view

ROOT = Path(__file__).resolve().parents[2]
TABLES = load_tables(ROOT / "schemas")
BY_NAME = {t.name: s for t, s in TABLES.items()}
VIEWS = load_views(ROOT / "schemas" / "views", set(TABLES))

# -- incremental maintenance: random change streams over a fact table and a dimension table it joins ------

EXAMPLES = int(os.environ.get("REPLICATOR_IVM_EXAMPLES", "25"))

FACTS = TableSchema(
    TableId("app", "facts"),
    (
        Column.of("id", "bigint", nullable=False),
        Column.of("g", "integer"),
        Column.of("d", "bigint"),
        Column.of("amount", "numeric(12,2)"),
        Column.of("status", "text"),
    ),
    ("id",),
)
DIMS = TableSchema(
    TableId("app", "dims"), (Column.of("d", "bigint", nullable=False), Column.of("region", "text")), ("d",)
)
IVM_VIEWS = {
    "rpt.by_group": """
        SELECT f.g, f.status, SUM(f.amount) AS total, COUNT(*) AS n, COUNT(f.amount) AS n_amount,
               AVG(f.amount) AS avg_amount
        FROM app.facts AS f WHERE f.status <> 'void' GROUP BY f.g, f.status""",
    "rpt.by_region": """
        SELECT d.region, f.g % 2 AS parity, SUM(f.amount * 2) AS doubled, COUNT(*) AS n
        FROM app.facts AS f JOIN app.dims AS d ON d.d = f.d GROUP BY d.region, f.g % 2""",
}


def catalog() -> ViewCatalog:
    views = [parse_view(TableId.parse(n), sql) for n, sql in IVM_VIEWS.items()]
    return order_views(views, {FACTS.table, DIMS.table})


amounts = st.one_of(st.none(), st.integers(-500, 500).map(lambda c: Decimal(c) / 100))
fact_rows = st.fixed_dictionaries(
    {
        "id": st.integers(1, 10),
        "g": st.one_of(st.none(), st.integers(1, 3)),
        "d": st.integers(1, 4),
        "amount": amounts,
        "status": st.sampled_from(["a", "b", "void"]),
    }
)
dim_rows = st.fixed_dictionaries(
    {"d": st.integers(1, 4), "region": st.one_of(st.none(), st.sampled_from(["n", "s"]))}
)


def changes(rows: st.SearchStrategy[dict[str, Any]], key: str) -> st.SearchStrategy[list[tuple[str, Any]]]:
    change = st.tuples(st.sampled_from(["I", "U", "D"]), rows).map(
        lambda c: (c[0], {key: c[1][key]} if c[0] == "D" else c[1])
    )
    return st.lists(change, min_size=1, max_size=8)


batches = st.lists(
    st.one_of(
        changes(fact_rows, "id").map(lambda c: (FACTS, c)),
        changes(dim_rows, "d").map(lambda c: (DIMS, c)),
        st.just((FACTS, [("T", {})])),
    ),
    min_size=1,
    max_size=8,
)


def normal(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows comparable across the two computations: floats (DuckDB's AVG) to 9 places, Decimals by value."""

    def v(x: Any) -> Any:
        if isinstance(x, float):
            return round(x, 9)
        if isinstance(x, Decimal):
            return round(float(x), 9)
        return x

    return sorted((tuple(v(x) for x in r) for r in rows), key=repr)


# -- changes to the sample tables, for a scripted source (tests.helpers.scripted) ---------------------------

PLANS = TableId("dbo", "payment_plans")
PAYMENTS = TableId("dbo", "payments")
READS_PLANS = {  # every sample view reading dbo.payment_plans (directly or through another view)
    "reporting.ar_aging",
    "reporting.claims_by_status",
    "reporting.daily_cash_collected",
    "reporting.delinquent_payment_plans",
}
_pos = iter(range(1, 10_000))


def _change(table: TableId, op: Op, *values: str | None) -> Change:
    return Change(table, op, values, Position(f"{next(_pos):08d}"), datetime(2024, 5, 1, tzinfo=UTC))


def plan(op: Op, total_fee: str) -> Change:
    return _change(PLANS, op, "1", "1", "1", "braces", total_fee, "100.00", "50.00", "18", "2024-01-01",
                   "delinquent", "true", "2024-01-01 00:00:00", "2024-01-01 00:00:00")  # fmt: skip


def practice_and_patient() -> list[Change]:
    return [
        _change(TableId("dbo", "practices"), Op.INSERT, "1", "Smile", None, None, None, "Austin", "TX", None,
                "America/Chicago", "true", "2020-01-01", "2020-01-01 00:00:00", "2020-01-01 00:00:00"),
        _change(TableId("dbo", "patients"), Op.INSERT, "1", "1", "Ada", "Ng", "2010-01-01", None, None, None,
                "true", None, "2024-01-01 00:00:00", "2024-01-01 00:00:00"),
    ]  # fmt: skip


def payment(i: int, amount: str) -> Change:
    return _change(PAYMENTS, Op.INSERT, str(i), "1", "1", amount, "card", "posted", f"R{i}", None,
                   "2024-05-01 10:00:00", "2024-05-01 10:00:00", "2024-05-01 10:00:00")  # fmt: skip
