"""Views: definitions and dependencies, refresh policies, which views refresh after which merges, the modes
PostgreSQL / DuckDB / Redshift use, and the status they report."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlglot

from replicator.model import TableId
from replicator.obs import metrics
from replicator.views.graph import Cron, RefreshPolicy, ViewError, order_views, parse_view
from replicator.views.ivm import analyse
from replicator.views.redshift import incremental_blockers
from replicator.views.refresh import ViewRefresher, read_status
from replicator.views.sql import RedshiftViews
from replicator.warehouses import (
    POSTGRES,
    Dialect,
    DuckDBWarehouse,
    MergeHook,
    PostgresWarehouse,
    SqlWarehouse,
    TableState,
)
from tests.helpers.views import BY_NAME, TABLES, VIEWS
from tests.helpers.warehouse import Stager

V = {v.name.name: v for v in VIEWS.views}


# -- definitions -----------------------------------------------------------------------------------------


def test_refresh_policies_parse_from_the_header() -> None:
    assert RefreshPolicy.parse("on change") == RefreshPolicy()
    assert RefreshPolicy.parse("at most every 60 seconds") == RefreshPolicy("interval", seconds=60)
    assert RefreshPolicy.parse("every 2 min") == RefreshPolicy("interval", seconds=120)
    assert RefreshPolicy.parse("schedule */15 6-8 * * 1-5").cron == Cron.parse("*/15 6-8 * * 1-5")
    with pytest.raises(ViewError):
        RefreshPolicy.parse("sometimes")
    with pytest.raises(ViewError):
        Cron.parse("61 * * * *")


def test_a_debounced_view_is_due_only_after_its_interval_and_a_scheduled_one_after_a_fire_time() -> None:
    every = RefreshPolicy("interval", seconds=60)
    assert every.due(last_refresh=None, now=1000)
    assert not every.due(last_refresh=1000, now=1059)
    assert every.due(last_refresh=1000, now=1060)
    hourly = RefreshPolicy.parse("schedule 0 * * * *")
    t = datetime(2024, 5, 1, 12, 30, tzinfo=UTC).timestamp()
    assert not hourly.due(last_refresh=t, now=t + 29 * 60)  # 12:59
    assert hourly.due(last_refresh=t, now=t + 30 * 60)  # 13:00


def test_sample_views_are_ordered_after_the_views_they_read() -> None:
    names = [str(v.name) for v in VIEWS.views]
    assert names.index("reporting.plan_collections") < names.index("reporting.ar_aging")
    assert names.index("reporting.plan_collections") < names.index("reporting.delinquent_payment_plans")
    assert V["ar_aging"].depends_on == {
        TableId("dbo", "payment_plans"),
        TableId("reporting", "plan_collections"),
    }
    assert VIEWS.base_tables(V["ar_aging"]) == {TableId("dbo", "payment_plans"), TableId("dbo", "payments")}
    changed = [str(v.name) for v in VIEWS.dependents({TableId("dbo", "payments")})]
    assert changed == [
        "reporting.daily_cash_collected",
        "reporting.plan_collections",
        "reporting.ar_aging",
        "reporting.delinquent_payment_plans",
    ]
    assert [str(v.name) for v in VIEWS.dependents({TableId("dbo", "insurance_claims")})] == [
        "reporting.claims_by_status"
    ]


def test_cycles_unknown_tables_and_unqualified_names_are_refused() -> None:
    a = parse_view(TableId("r", "a"), "SELECT x FROM r.b")
    b = parse_view(TableId("r", "b"), "SELECT x FROM r.a")
    with pytest.raises(ViewError, match="cycle"):
        order_views([a, b], set())
    with pytest.raises(ViewError, match="not a replicated table"):
        order_views([a], set())
    with pytest.raises(ViewError, match=r"schema\.table"):
        parse_view(TableId("r", "c"), "SELECT x FROM payments")


def test_each_sample_view_gets_the_mode_its_sql_allows() -> None:
    modes = {n: analyse(v, VIEWS.base_tables(v))[1] or "incremental" for n, v in V.items()}
    assert modes == {
        "claims_by_status": "incremental",
        "daily_cash_collected": "incremental",
        "plan_collections": "incremental",
        "ar_aging": "mutable function (its value changes without data changing)",
        "delinquent_payment_plans": "not an aggregate (SELECT ... GROUP BY with SUM/COUNT/AVG)",
    }
    assert V["ar_aging"].unique_key == ("practice_id", "bucket")
    assert V["delinquent_payment_plans"].unique_key == ("plan_id",)


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT f.g, MIN(f.a) AS m FROM s.f AS f GROUP BY f.g", "neither a GROUP BY key"),
        ("SELECT f.g, COUNT(DISTINCT f.a) AS m FROM s.f AS f GROUP BY f.g", "neither a GROUP BY key"),
        ("SELECT f.g, SUM(f.a) AS m FROM s.f AS f LEFT JOIN s.d AS d ON d.k = f.k GROUP BY f.g", "outer"),
        ("SELECT f.g, SUM(f.a) AS m FROM s.f AS f GROUP BY f.g HAVING SUM(f.a) > 0", "HAVING"),
        ("SELECT SUM(f.a) AS m FROM s.f AS f", "global aggregate"),
    ],
)
def test_views_outside_the_incremental_form_fall_back_to_a_full_refresh(sql: str, reason: str) -> None:
    view = parse_view(TableId("r", "v"), sql)
    plan, why = analyse(view, {TableId("s", "f"), TableId("s", "d")})
    assert plan is None
    assert reason in why


# -- Redshift (no server here: SQL is golden-tested and parsed) ------------------------------------------


def test_redshift_views_are_created_without_auto_refresh_and_refreshed_by_name() -> None:
    rs = RedshiftViews()
    view = V["plan_collections"]
    create = rs.create(view)
    assert create == [
        'CREATE SCHEMA IF NOT EXISTS "reporting"',
        'CREATE MATERIALIZED VIEW "reporting"."plan_collections" AUTO REFRESH NO AS SELECT p.plan_id,'
        " SUM(p.amount) AS collected, COUNT(*) AS payments FROM dbo.payments AS p WHERE p.status = 'posted'"
        " GROUP BY p.plan_id",
    ]
    assert rs.refresh(view) == ['REFRESH MATERIALIZED VIEW "reporting"."plan_collections"']
    for statement in [*create, rs.refresh_report(view) or ""]:
        sqlglot.parse_one(statement, read="redshift")
    assert rs.classify([("Refresh successfully updated MV incrementally",)]) == "incremental"
    assert rs.classify([("Refresh successfully recomputed MV from scratch",)]) == "recompute"
    assert rs.classify([]) == "unknown"


def test_sql_that_prevents_incremental_refresh_on_redshift_is_named() -> None:
    assert incremental_blockers(V["plan_collections"].select) == []
    assert incremental_blockers(V["delinquent_payment_plans"].select) == ["left join"]
    assert incremental_blockers(V["ar_aging"].select) == ["left join", "mutable function (CURRENT_DATE)"]
    other = parse_view(
        TableId("r", "v"),
        "SELECT a.x, COUNT(DISTINCT a.y) AS n, ROW_NUMBER() OVER (ORDER BY a.x) AS r FROM s.a AS a"
        " GROUP BY a.x UNION SELECT b.x, 1, 1 FROM s.b AS b",
    )
    assert incremental_blockers(other.select) == [
        "DISTINCT aggregate",
        "set operation (UNION)",
        "window function",
    ]


class FakeRedshift:
    """Records statements; answers the refresh-status query like SVL_MV_REFRESH_STATUS would."""

    dialect: Dialect = dataclasses.replace(POSTGRES, name="redshift")

    def __init__(self) -> None:
        self.statements: list[str] = []

    def run_statements(self, statements: list[str]) -> None:
        self.statements += statements

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        if "svl_mv_refresh_status" in sql:
            return [("Refresh successfully updated MV incrementally",)]
        return []

    def add_hook(self, hook: MergeHook) -> None:
        raise AssertionError("Redshift views are refreshed by Redshift, not maintained in the merge")

    def table_states(self) -> dict[TableId, TableState]:
        return {}


def test_redshift_views_refresh_in_dependency_order_and_report_what_redshift_did() -> None:
    fake = FakeRedshift()
    refresher = ViewRefresher(VIEWS, fake)
    refresher.start()
    assert refresher.runs[TableId("reporting", "ar_aging")].note.startswith("Redshift recomputes it in full")
    fake.statements.clear()
    before = _count("reporting.plan_collections", "incremental")
    refresher.after_merges({TableId("dbo", "payments")}, flush=True)
    refreshes = [s for s in fake.statements if s.startswith("REFRESH")]
    assert refreshes == [
        'REFRESH MATERIALIZED VIEW "reporting"."daily_cash_collected"',
        'REFRESH MATERIALIZED VIEW "reporting"."plan_collections"',
        'REFRESH MATERIALIZED VIEW "reporting"."ar_aging"',
        'REFRESH MATERIALIZED VIEW "reporting"."delinquent_payment_plans"',
    ]
    assert _count("reporting.plan_collections", "incremental") == before + 1


# -- DuckDB and PostgreSQL --------------------------------------------------------------------------------


def _count(view: str, mode: str) -> float:
    return metrics.VIEW_REFRESHES.labels(view=view, mode=mode)._value.get()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


def _open(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> SqlWarehouse:
    if engine == "duckdb":
        return DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    return PostgresWarehouse(request.getfixturevalue("pg_dsn"))


def _plan(i: int, status: str = "active") -> dict[str, Any]:
    return {
        "plan_id": i, "patient_id": i, "practice_id": 1, "treatment": "braces",
        "total_fee": Decimal("1000.00"), "down_payment": Decimal("100.00"),
        "monthly_amount": Decimal("50.00"), "term_months": 18,
        "start_date": datetime(2024, 1, 1).date(), "status": status, "autopay": True,
        "created_at": datetime(2024, 1, 1), "updated_at": datetime(2024, 1, 1),
    }  # fmt: skip


def _payment(i: int, plan: int, amount: str) -> dict[str, Any]:
    t = datetime(2024, 5, 1, 10, 0)
    return {
        "payment_id": i, "plan_id": plan, "patient_id": plan, "amount": Decimal(amount), "method": "card",
        "status": "posted", "reference": None, "memo": None, "paid_at": t, "created_at": t, "updated_at": t,
    }  # fmt: skip


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_only_views_whose_inputs_changed_refresh_and_debounced_ones_wait(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    wh = _open(engine, tmp_path, request)
    try:
        wh.setup()
        for schema in TABLES.values():
            wh.ensure_table(schema)
        clock = Clock()
        refresher = ViewRefresher(VIEWS, wh, clock=clock)
        refresher.start()
        stager = Stager(tmp_path)
        counts = lambda: {  # noqa: E731
            n: sum(_count(f"reporting.{n}", m) for m in ("incremental", "recompute", "full", "concurrent"))
            for n in V
        }
        start = counts()

        def apply(table: str, changes: list[tuple[str, dict[str, Any]]]) -> None:
            manifest, path = stager.batch(BY_NAME[table], changes)
            wh.apply(manifest, BY_NAME[table], path)

        apply("payment_plans", [("I", _plan(1, "delinquent")), ("I", _plan(2))])
        refresher.after_merges({TableId("dbo", "payment_plans")})
        apply("payments", [("I", _payment(1, 1, "100.00")), ("I", _payment(2, 2, "40.00"))])
        clock.now += 1
        refreshed = refresher.after_merges({TableId("dbo", "payments")})
        # ar_aging was refreshed at creation one second ago: its 60 s debounce holds it back.
        assert [str(n) for n in refreshed] == ["reporting.delinquent_payment_plans"]
        delta = {n: counts()[n] - start[n] for n in V}
        assert delta == {
            "claims_by_status": 1,  # joins payment_plans: maintained in that merge, not in the payments one
            "daily_cash_collected": 2,  # reads both tables: maintained in both merges
            "plan_collections": 1,  # reads payments only
            "ar_aging": 0,  # debounced
            "delinquent_payment_plans": 2,  # after the plans merge and after the payments merge
        }
        # A merge of a table no full-refresh view reads refreshes none of them.
        before = counts()
        claim = {
            "claim_id": 1, "plan_id": 1, "patient_id": 1, "payer_name": "Acme", "claim_number": "C1",
            "billed_amount": Decimal("200.00"), "allowed_amount": None, "paid_amount": None,
            "status": "submitted", "submitted_on": datetime(2024, 5, 1).date(), "adjudicated_on": None,
            "denial_reason": None, "created_at": datetime(2024, 5, 1), "updated_at": datetime(2024, 5, 1),
        }  # fmt: skip
        apply("insurance_claims", [("I", claim)])
        assert refresher.after_merges({TableId("dbo", "insurance_claims")}) == []
        after = counts()
        assert {n: after[n] - before[n] for n in V if after[n] != before[n]} == {"claims_by_status": 1}
        assert wh.fetch("SELECT practice_id, status, claims, billed FROM reporting.claims_by_status") == [
            (1, "submitted", 1, Decimal("200.00"))
        ]
        collected = wh.fetch("SELECT plan_id, collected, payments FROM reporting.plan_collections ORDER BY 1")
        assert collected == [(1, Decimal("100.00"), 1), (2, Decimal("40.00"), 1)]
        status = {s.view: s for s in read_status(wh.fetch, now=datetime.fromtimestamp(clock.now + 5, UTC))}
        assert status["reporting.ar_aging"].stale_seconds == pytest.approx(6.0)
        assert status["reporting.plan_collections"].mode == "incremental"
        expected_full = "concurrent" if engine == "postgres" else "full"
        assert status["reporting.delinquent_payment_plans"].mode == expected_full
        clock.now += 60
        assert [str(n) for n in refresher.after_merges(set())] == ["reporting.ar_aging"]
        aging = wh.fetch("SELECT SUM(plans) FROM reporting.ar_aging")
        assert aging == [(2,)]
    finally:
        wh.close()


def test_postgres_views_with_a_unique_key_are_materialized_views_refreshed_concurrently(pg_dsn: str) -> None:
    wh = PostgresWarehouse(pg_dsn)
    try:
        wh.setup()
        for schema in TABLES.values():
            wh.ensure_table(schema)
        ViewRefresher(VIEWS, wh).start()
        matviews = wh.fetch("SELECT schemaname, matviewname FROM pg_matviews ORDER BY 2")
        assert matviews == [("reporting", "ar_aging"), ("reporting", "delinquent_payment_plans")]
        indexes = wh.fetch(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'reporting'"
            " AND indexdef LIKE '%UNIQUE%' ORDER BY 1"
        )
        assert [i for (i,) in indexes] == [
            "CREATE UNIQUE INDEX ar_aging_key ON reporting.ar_aging USING btree (practice_id, bucket)",
            "CREATE UNIQUE INDEX delinquent_payment_plans_key ON reporting.delinquent_payment_plans"
            " USING btree (plan_id)",
        ]
    finally:
        wh.close()


def test_a_changed_view_definition_rebuilds_it_and_the_views_reading_it(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    try:
        wh.setup()
        for schema in TABLES.values():
            wh.ensure_table(schema)
        ViewRefresher(VIEWS, wh).start()
        changed = parse_view(
            TableId("reporting", "plan_collections"),
            "SELECT p.plan_id, SUM(p.amount) AS collected FROM dbo.payments AS p GROUP BY p.plan_id",
        )
        others = [v for v in VIEWS.views if v.name != changed.name]
        refresher = ViewRefresher(order_views([*others, changed], set(TABLES)), wh)
        refresher.start()
        cols = wh.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'plan_collections'"
            " ORDER BY ordinal_position"
        )
        assert cols == [("plan_id",), ("collected",)]
        assert wh.fetch("SELECT count(*) FROM reporting.delinquent_payment_plans") == [(0,)]
    finally:
        wh.close()
