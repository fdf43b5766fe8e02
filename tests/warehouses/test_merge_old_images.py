"""The merge form that copies old images aside (PostgreSQL; used when an incremental view reads the table,
``Dialect.merge(old_images=...)``) must behave exactly like the plain MERGE.

The warehouse conformance tests that merge through ``wh`` run here again on PostgreSQL with a hook that asks
for old images and checks, in every batch, that the copy holds exactly the target rows of the touched keys as
they were before the merge. The conformance tests compare whole target tables, so the merge's effect is
checked too.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from replicator.model import TableId, TableSchema
from replicator.sql import quote_ident, quote_table
from replicator.views import ViewRefresher, order_views, parse_view
from replicator.warehouses.duckdb import DuckDBWarehouse
from replicator.warehouses.postgres import PostgresWarehouse
from replicator.warehouses.sql_base import MergeContext, SqlWarehouse
from tests.warehouses import test_warehouse_conformance as conformance
from tests.warehouses.test_warehouse_conformance import ACCOUNTS, Target, acct, put, row, rows

stager = conformance.stager
test_a_batch_with_one_change_per_key_is_counted_without_reducing = (
    conformance.test_a_batch_with_one_change_per_key_is_counted_without_reducing
)
test_a_column_dropped_at_the_source_stays_in_the_target = (
    conformance.test_a_column_dropped_at_the_source_stays_in_the_target
)
test_a_longer_varchar_widens_the_column_and_a_shorter_one_just_fits = (
    conformance.test_a_longer_varchar_widens_the_column_and_a_shorter_one_just_fits
)
test_a_new_source_column_is_added_before_the_batch_that_needs_it = (
    conformance.test_a_new_source_column_is_added_before_the_batch_that_needs_it
)
test_an_error_before_commit_leaves_target_and_ledger_untouched = (
    conformance.test_an_error_before_commit_leaves_target_and_ledger_untouched
)
test_composite_and_key_only_tables_merge = conformance.test_composite_and_key_only_tables_merge
test_every_type_round_trips_through_insert_and_update = (
    conformance.test_every_type_round_trips_through_insert_and_update
)
test_int_to_bigint_and_more_numeric_digits_widen_where_the_engine_can = (
    conformance.test_int_to_bigint_and_more_numeric_digits_widen_where_the_engine_can
)
test_replaying_an_applied_batch_changes_nothing = conformance.test_replaying_an_applied_batch_changes_nothing
test_soft_deletes_mark_rows_and_a_later_insert_revives_them = (
    conformance.test_soft_deletes_mark_rows_and_a_later_insert_revives_them
)
test_the_last_change_per_key_wins_within_a_batch = (
    conformance.test_the_last_change_per_key_wins_within_a_batch
)
test_unchanged_column_names_with_quotes_commas_and_braces_are_matched_exactly = (
    conformance.test_unchanged_column_names_with_quotes_commas_and_braces_are_matched_exactly
)
test_unchanged_columns_keep_the_target_value = conformance.test_unchanged_columns_keep_the_target_value


class OldImageCheck:
    """Asks for old images; fails the batch unless the copy equals the touched keys' rows before the merge."""

    def __init__(self) -> None:
        self.expected: list[tuple[Any, ...]] = []
        self.checked = 0  # batches whose copy was compared

    def wants_old_images(self, ctx: MergeContext) -> bool:
        return True

    def before_merge(self, ctx: MergeContext) -> None:
        assert ctx.old_images is not None, "the warehouse did not copy old images although asked"
        on = " AND ".join(f"s.{quote_ident(k)} = t.{quote_ident(k)}" for k in ctx.schema.primary_key)
        staged = quote_ident(ctx.staging)
        self.expected = sorted(
            ctx.query(
                f"SELECT t.* FROM {quote_table(ctx.schema.table)} AS t"
                f" WHERE EXISTS (SELECT 1 FROM {staged} AS s WHERE {on})"
            ),
            key=repr,
        )

    def after_merge(self, ctx: MergeContext) -> None:
        assert ctx.old_images is not None
        copied = sorted(ctx.query(f"SELECT * FROM {quote_ident(ctx.old_images)}"), key=repr)
        assert copied == self.expected, "the merge's copy of old images differs from the rows it changed"
        self.checked += 1


@pytest.fixture
def target(pg_dsn: str) -> Target:
    return Target("postgres", pg_dsn)


@pytest.fixture
def wh(target: Target) -> Iterator[SqlWarehouse]:
    warehouse = target.open()
    assert warehouse.captures_old_images
    warehouse.setup()
    warehouse.add_hook(OldImageCheck())
    yield warehouse
    warehouse.close()


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
        refresher = ViewRefresher(order_views([view], {ACCOUNTS.table, other.table}), wh)
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
