"""Checks that each batch was applied exactly once, for the crash tests.

End states cannot see a double apply (upserts are idempotent) and ``batch_id`` is the ledger's primary key,
so "no duplicate ids" cannot fail. What can:

- the ledger: per table, the applied batches' position ranges never overlap (a change staged in two batches
  and both applied), their row counts add up to the number of changes the source holds (nothing lost,
  nothing staged twice), each batch's op counts add up to its rows, and batches were applied in position
  order (``applied_at`` never goes back);
- on PostgreSQL, the target itself (``audit_postgres``): a statement trigger on every target table and a
  row trigger on the ledger record the transaction of each write, so a transaction that changed a target
  without writing exactly one ledger row (a merge committed apart from its ledger row, or applied twice)
  shows up even when no crash hit it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import duckdb
import psycopg2

from replicator.model import Position, TableSchema
from replicator.sql import quote_table
from replicator.warehouses import PostgresWarehouse
from tests.helpers.dms_reference import records


@dataclass(frozen=True, slots=True)
class Applied:
    """One ledger row."""

    batch_id: str
    table: str  # "schema.name"
    first: Position
    last: Position
    rows: int
    inserts: int
    updates: int
    deletes: int
    applied_at: datetime


_LEDGER = (
    'SELECT batch_id, table_schema, table_name, first_position, last_position, "rows", inserts, updates,'
    ' deletes, applied_at FROM "_replicator"."batches"'
)


def _applied(rows: Iterable[tuple[object, ...]]) -> list[Applied]:
    out = []
    for bid, schema, name, first, last, n, i, u, d, at in rows:
        out.append(
            Applied(
                str(bid),
                f"{schema}.{name}",
                Position(str(first)),
                Position(str(last)),
                int(n),  # type: ignore[call-overload]
                int(i),  # type: ignore[call-overload]
                int(u),  # type: ignore[call-overload]
                int(d),  # type: ignore[call-overload]
                at,  # type: ignore[arg-type]
            )
        )
    return out


def ledger_duckdb(path: Path) -> list[Applied]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return _applied(con.execute(_LEDGER).fetchall())
    finally:
        con.close()


def ledger_postgres(dsn: str) -> list[Applied]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(_LEDGER)
        return _applied(cur.fetchall())


def dms_changes(feed: Path, schema: str = "dbo") -> dict[str, int]:
    """Changes per table ("schema.name") of a DMS CSV feed of the demo's format, by the reference reader."""
    return {
        f"{schema}.{d.name}": sum(1 for _ in records(d))
        for d in sorted((feed / schema).iterdir())
        if d.is_dir()
    }


def assert_applied_exactly_once(ledger: list[Applied], changes: Mapping[str, int]) -> None:
    """Every change of the source is in exactly one applied batch, and batches applied in order."""
    by_table: dict[str, list[Applied]] = defaultdict(list)
    for a in ledger:
        by_table[a.table].append(a)
    assert set(by_table) <= set(changes), f"ledger rows of unknown tables: {set(by_table) - set(changes)}"
    for table, n in sorted(changes.items()):
        batches = sorted(by_table.get(table, []), key=lambda a: a.first)
        for a in batches:
            assert a.first <= a.last, f"{table} batch {a.batch_id}: first {a.first} after last {a.last}"
            counted = a.inserts + a.updates + a.deletes
            assert counted == a.rows, f"{table} batch {a.batch_id}: {counted} ops counted for {a.rows} rows"
        for a, b in pairwise(batches):
            assert a.last < b.first, (
                f"{table}: batches {a.batch_id} [{a.first} .. {a.last}] and {b.batch_id} [{b.first} .. "
                f"{b.last}] overlap: changes staged and applied twice"
            )
            assert a.applied_at <= b.applied_at, (
                f"{table}: batch {b.batch_id} (from {b.first}) applied at {b.applied_at}, before the earlier "
                f"batch {a.batch_id} (applied at {a.applied_at}): batches applied out of order"
            )
        applied = sum(a.rows for a in batches)
        assert applied == n, f"{table}: {applied} changes applied for the {n} the source holds"


_AUDIT_DDL = """
CREATE TABLE public.apply_audit (txid bigint NOT NULL, target text NOT NULL, batch_id text);
CREATE FUNCTION public.audit_target() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.apply_audit VALUES (txid_current(), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, NULL);
  RETURN NULL;
END $$;
CREATE FUNCTION public.audit_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.apply_audit VALUES (txid_current(), 'ledger', NEW.batch_id);
  RETURN NULL;
END $$;
CREATE TRIGGER audit AFTER INSERT ON "_replicator"."batches" FOR EACH ROW
  EXECUTE FUNCTION public.audit_ledger();
"""


def audit_postgres(dsn: str, schemas: Iterable[TableSchema]) -> None:
    """Set the warehouse up (as the daemon would) and put the audit triggers on its ledger and targets."""
    wh = PostgresWarehouse(dsn)
    try:
        wh.setup()
        tables = list(schemas)
        for schema in tables:
            wh.ensure_table(schema)
    finally:
        wh.close()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(_AUDIT_DDL)
        for schema in tables:
            cur.execute(
                f"CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON {quote_table(schema.table)}"
                " FOR EACH STATEMENT EXECUTE FUNCTION public.audit_target()"
            )


def assert_every_target_write_committed_with_one_ledger_row(dsn: str) -> None:
    """Each transaction that changed a target table wrote exactly one ledger row, and each ledger row was
    written by a transaction that ran a merge (statement triggers fire even when no row changes)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT txid, target, batch_id FROM public.apply_audit")
        audit = cur.fetchall()
    ledger_rows: dict[int, list[str]] = defaultdict(list)
    writes: dict[int, set[str]] = defaultdict(set)
    for txid, target, bid in audit:
        if target == "ledger":
            ledger_rows[txid].append(bid)
        else:
            writes[txid].add(target)
    assert writes, "no merge changed a target table: the audit saw nothing"
    for txid, targets in writes.items():
        assert len(ledger_rows.get(txid, [])) == 1, (
            f"transaction {txid} changed {sorted(targets)} and wrote ledger rows {ledger_rows.get(txid, [])}:"
            " a merge must commit with exactly one ledger row"
        )
    for txid, bids in ledger_rows.items():
        assert txid in writes, f"ledger rows {bids} were written by transaction {txid}, which merged nothing"
