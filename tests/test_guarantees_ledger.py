"""A ledger row that cannot be written takes its merge down with it: the target stays as it was, and once
the cause is gone the batch applies exactly once.

The failure is the engine's own (a trigger on PostgreSQL and the Redshift path, a CHECK constraint on
DuckDB, which has no triggers), so what is tested is the transaction, not a stub's idea of it.
"""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from replicator.demo import feed as demo
from replicator.sql import quote_literal, quote_table
from replicator.warehouses import LEDGER, DuckDBWarehouse, SqlWarehouse
from tests.helpers.guarantees import (
    assert_applied_exactly_once,
    assert_every_target_write_committed_with_one_ledger_row,
    audit_postgres,
    dms_changes,
    ledger_postgres,
)
from tests.helpers.support import (
    SCHEMAS,
    assert_same_state,
    expected_state,
    pg_env,
    postgres_state,
    run_cli,
    write_config,
)
from tests.helpers.warehouse import ACCOUNTS, Stager, Target, acct, ledger, put, row, rows


def refuse_ledger_rows(target: Target, wh: SqlWarehouse, batch_id: str) -> None:
    """Make the engine reject the ledger row of ``batch_id`` (and only it)."""
    if isinstance(wh, DuckDBWarehouse):
        # DuckDB cannot add a constraint to a table: rebuild the ledger with a CHECK, keeping its rows.
        create = next(s for s in wh.dialect.setup() if quote_table(LEDGER) + " (" in s)
        check = f", CHECK (batch_id <> {quote_literal(batch_id)}))"
        wh.run_statements(
            [
                f"ALTER TABLE {quote_table(LEDGER)} RENAME TO batches_before",
                create.removesuffix(")") + check,
                f'INSERT INTO {quote_table(LEDGER)} SELECT * FROM "_replicator".batches_before',
                'DROP TABLE "_replicator".batches_before',
            ]
        )
        return
    with psycopg2.connect(target.address) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE FUNCTION public.refuse_ledger_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'ledger write refused (test)'; END $$;"
            f" CREATE TRIGGER refuse BEFORE INSERT ON {quote_table(LEDGER)} FOR EACH ROW"
            f" WHEN (NEW.batch_id = {quote_literal(batch_id)}) EXECUTE FUNCTION public.refuse_ledger_row()"
        )


def allow_ledger_rows(target: Target, wh: SqlWarehouse) -> None:
    if isinstance(wh, DuckDBWarehouse):
        create = next(s for s in wh.dialect.setup() if quote_table(LEDGER) + " (" in s)
        wh.run_statements(
            [
                f"ALTER TABLE {quote_table(LEDGER)} RENAME TO batches_blocked",
                create,
                f'INSERT INTO {quote_table(LEDGER)} SELECT * FROM "_replicator".batches_blocked',
                'DROP TABLE "_replicator".batches_blocked',
            ]
        )
        return
    with psycopg2.connect(target.address) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TRIGGER refuse ON {quote_table(LEDGER)}")


def test_a_ledger_write_that_fails_leaves_the_target_unchanged_and_the_batch_applies_once_later(
    target: Target, wh: SqlWarehouse, tmp_path: Path
) -> None:
    stager = Stager(tmp_path / "staged")
    stager.folder.mkdir()
    wh.ensure_table(ACCOUNTS)
    put(wh, stager, ACCOUNTS, [("I", acct(1, "a")), ("I", acct(2, "b"))])
    before = (rows(wh, ACCOUNTS), ledger(wh), wh.table_states())
    manifest, path = stager.batch(
        ACCOUNTS, [("U", acct(1, "changed")), ("D", {"id": 2}), ("I", acct(3, "c"))]
    )
    refuse_ledger_rows(target, wh, manifest.batch_id)

    with pytest.raises(Exception, match=r"ledger write refused|CHECK constraint|Constraint Error"):
        wh.apply(manifest, ACCOUNTS, path)
    assert (rows(wh, ACCOUNTS), ledger(wh), wh.table_states()) == before

    allow_ledger_rows(target, wh)
    assert wh.apply(manifest, ACCOUNTS, path).applied
    assert not wh.apply(manifest, ACCOUNTS, path).applied  # replayed: the ledger now has it
    assert rows(wh, ACCOUNTS) == [row(1, "changed"), row(3, "c")]
    assert [r[0] for r in ledger(wh)][-1] == manifest.batch_id and len(ledger(wh)) == 2
    assert wh.table_states()[ACCOUNTS.table].batches == 2


def test_a_table_whose_ledger_rows_are_refused_stays_unchanged_while_others_go_on_then_catches_up_once(
    tmp_path: Path, pg_dsn: str
) -> None:
    feed = tmp_path / "feed"
    demo.generate(feed, seed=25, patients=40, cdc_files=3, changes_per_file=40)
    cfg = write_config(tmp_path / "r.toml", source=str(feed), staging=str(tmp_path / "stage"), max_rows=40)
    env = pg_env(pg_dsn)
    audit_postgres(pg_dsn, SCHEMAS.values())
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE FUNCTION public.refuse_ledger_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'ledger write refused (test)'; END $$;"
            f" CREATE TRIGGER refuse BEFORE INSERT ON {quote_table(LEDGER)} FOR EACH ROW"
            " WHEN (NEW.table_name = 'payments') EXECUTE FUNCTION public.refuse_ledger_row()"
        )

    blocked = run_cli("run", "-c", str(cfg), "--once", env=env)
    assert blocked.returncode == 1, blocked.stderr  # --once says a table could not be merged
    assert "ledger write refused (test)" in blocked.stderr
    state, want = postgres_state(pg_dsn), expected_state(feed)
    assert state["payments"] == {}, "a merge whose ledger row failed changed the target"
    assert_same_state(
        {k: v for k, v in state.items() if k != "payments"},
        {k: v for k, v in want.items() if k != "payments"},
    )
    assert all(a.table != "dbo.payments" for a in ledger_postgres(pg_dsn))

    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TRIGGER refuse ON {quote_table(LEDGER)}")
    rerun = run_cli("run", "-c", str(cfg), "--once", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_state(postgres_state(pg_dsn), want)
    assert_applied_exactly_once(ledger_postgres(pg_dsn), dms_changes(feed))
    assert_every_target_write_committed_with_one_ledger_row(pg_dsn)
