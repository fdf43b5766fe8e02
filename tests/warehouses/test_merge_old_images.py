"""The merge form that copies old images aside (PostgreSQL; used when an incremental view reads the table,
``Dialect.merge(old_images=...)``) must behave exactly like the plain MERGE.

The warehouse conformance tests that merge through ``wh`` run again on PostgreSQL with a hook that asks for
old images and checks, in every batch, that the copy holds exactly the target rows of the touched keys as
they were before the merge (``@also_with_old_images`` there: ``[postgres-old-images]``). The conformance
tests compare whole target tables, so the merge's effect is checked too. This module tests the rest.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from replicator.model import TableId, TableSchema
from replicator.views import ViewRefresher, order_views, parse_view
from replicator.warehouses.duckdb import DuckDBWarehouse
from replicator.warehouses.postgres import PostgresWarehouse
from replicator.warehouses.sql_base import MergeContext, SqlWarehouse
from tests.helpers.warehouse import ACCOUNTS, OldImageCheck, acct, put, row, rows


def _statements(wh: SqlWarehouse, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    execute = wh._execute

    def recording(sql: str) -> None:
        seen.append(sql)
        execute(sql)

    monkeypatch.setattr(wh, "_execute", recording)
    return seen


def test_the_merge_copies_old_images_only_while_a_hook_asks_for_them(
    pg_dsn: str, stager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh = PostgresWarehouse(pg_dsn)
    try:
        wh.setup()
        wh.ensure_table(ACCOUNTS)
        seen = _statements(wh, monkeypatch)
        put(wh, stager, ACCOUNTS, [("I", acct(1, "a")), ("I", acct(2, "b"))])
        assert any(s.startswith("MERGE INTO") for s in seen)
        assert not any(s.startswith("WITH r AS") for s in seen), "no hook asked, yet the merge copied"
        check = OldImageCheck()
        wh.add_hook(check)
        seen.clear()
        put(wh, stager, ACCOUNTS, [("U", acct(1, "a2", "5.00")), ("D", {"id": 2}), ("I", acct(3, "c"))])
        assert any(s.startswith("WITH r AS") for s in seen) and not any(s.startswith("MERGE") for s in seen)
        assert check.checked == 1
        assert check.expected == [row(1, "a"), row(2, "b")]
        assert rows(wh, ACCOUNTS) == [row(1, "a2", "5.00"), row(3, "c")]
        temps = "SELECT relname FROM pg_class WHERE relname LIKE '%\\_o' AND relpersistence = 't'"
        leftovers = wh.query(temps)
        assert leftovers == [], "the copy's temp table outlived the batch"
    finally:
        wh.close()


def test_duckdb_keeps_the_plain_merge_when_a_hook_asks_for_old_images(
    tmp_path: Path, stager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    try:
        wh.setup()
        wh.ensure_table(ACCOUNTS)
        seen_ctx: list[str | None] = []

        class Asks(OldImageCheck):
            def before_merge(self, ctx: MergeContext) -> None:
                seen_ctx.append(ctx.old_images)

            def after_merge(self, ctx: MergeContext) -> None:
                pass

        wh.add_hook(Asks())
        seen = _statements(wh, monkeypatch)
        put(wh, stager, ACCOUNTS, [("I", acct(1, "a"))])
        assert seen_ctx == [None]
        assert any(s.startswith("MERGE INTO") for s in seen)
        assert rows(wh, ACCOUNTS) == [row(1, "a")]
    finally:
        wh.close()


def test_with_an_incremental_view_only_the_tables_it_reads_take_the_copying_merge(
    pg_dsn: str, stager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = TableSchema(TableId("app", "other"), ACCOUNTS.columns, ACCOUNTS.primary_key)
    view = parse_view(
        TableId("rpt", "by_name"),
        "SELECT a.name, SUM(a.balance) AS total FROM app.accounts AS a GROUP BY a.name",
    )
    wh = PostgresWarehouse(pg_dsn)
    try:
        wh.setup()
        for schema in (ACCOUNTS, other):
            wh.ensure_table(schema)
        refresher = ViewRefresher(order_views([view], {ACCOUNTS.table, other.table}), wh, by_cost=False)
        refresher.start()
        assert refresher.runs[view.name].mode == "incremental"
        seen = _statements(wh, monkeypatch)
        put(wh, stager, other, [("I", acct(1, "a"))])
        assert [s[:10] for s in seen if s.startswith(("MERGE INTO", "WITH r AS"))] == ["MERGE INTO"]
        seen.clear()
        put(wh, stager, ACCOUNTS, [("I", acct(1, "a", "2.00")), ("I", acct(2, "a", "3.00"))])
        put(wh, stager, ACCOUNTS, [("U", acct(1, "b", "2.00")), ("D", {"id": 2})])
        assert sum(s.startswith("WITH r AS") for s in seen) == 2
        assert not any(s.startswith('MERGE INTO "app"') for s in seen)
        assert wh.query("SELECT name, total FROM rpt.by_name") == [("b", Decimal("2.00"))]
    finally:
        wh.close()
