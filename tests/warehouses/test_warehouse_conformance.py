"""One behaviour suite run against every SQL warehouse: DuckDB (embedded), PostgreSQL (real server) and
the Redshift warehouse's code path run on PostgreSQL through ``redshift_connector`` and the test shim
(``tests/helpers/redshift_shim.py``: only COPY from S3 is swapped for a loader, and a few type spellings).

Each test builds staged Parquet batches with pyarrow in the format ``replicator.stage`` writes, applies them
and compares the *whole* target table (and ledger) with what it must hold.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redshift_connector

from replicator.model import Column, Position, TableId, TableSchema
from replicator.schema import TableOptions
from replicator.warehouses import postgres as pg_warehouse
from replicator.warehouses import sql_base
from replicator.warehouses.duckdb import DuckDBWarehouse
from replicator.warehouses.evolution import IncompatibleSchemaChange
from replicator.warehouses.redshift import RedshiftWarehouse, RetryPolicy
from replicator.warehouses.sql_base import SqlWarehouse
from tests.helpers.redshift_shim import RedshiftShim
from tests.helpers.warehouse import (
    ACCOUNTS,
    T0,
    Stager,
    Target,
    acct,
    also_with_old_images,
    ledger,
    put,
    query,
    row,
    rows,
)

# -- setup and tables ------------------------------------------------------------------------------------


def test_setup_is_idempotent_and_keeps_the_ledger(target: Target, stager: Stager) -> None:
    first = target.open()
    first.setup()
    first.ensure_table(ACCOUNTS)
    manifest, path = stager.batch(ACCOUNTS, [("I", acct(1, "a"))])
    first.apply(manifest, ACCOUNTS, path)
    first.close()
    again = target.open()
    again.setup()
    again.setup()
    assert [r[0] for r in ledger(again)] == [manifest.batch_id]
    assert rows(again, ACCOUNTS) == [row(1, "a")]
    again.close()


def test_setup_drops_staging_tables_a_previous_run_left_behind(wh: SqlWarehouse) -> None:
    query_exec(wh, "CREATE TABLE _replicator._stg_0123abcd (x integer)")
    query_exec(wh, "CREATE TABLE _replicator.keep_me (x integer)")
    wh.setup()
    names = {
        r[0]
        for r in query(
            wh, "SELECT table_name FROM information_schema.tables WHERE table_schema = '_replicator'"
        )
    }
    assert names == {"batches", "tables", "columns", "schema_errors", "keep_me"}


def query_exec(wh: SqlWarehouse, sql: str) -> None:
    wh._in_transaction([sql])  # test-only DDL; the warehouses expose no general "execute"


def test_ensure_table_creates_the_target_once_named_as_the_source(wh: SqlWarehouse, stager: Stager) -> None:
    odd = TableSchema(
        TableId('Sales "EU"', "order lines"),
        (Column.of("Id", "integer", nullable=False), Column.of("select", "varchar(10)")),
        ("Id",),
    )
    wh.ensure_table(odd)
    put(wh, stager, odd, [("I", {"Id": 1, "select": "x"})])
    wh.ensure_table(odd)  # existing table and rows survive
    assert rows(wh, odd) == [(1, "x")]
    assert query(wh, 'SELECT count(*) FROM "Sales ""EU"""."order lines"') == [(1,)]


# -- merge semantics -------------------------------------------------------------------------------------


@also_with_old_images
def test_the_last_change_per_key_wins_within_a_batch(wh: SqlWarehouse, stager: Stager) -> None:
    wh.ensure_table(ACCOUNTS)
    put(wh, stager, ACCOUNTS, [("I", acct(5, "five")), ("I", acct(6, "six"))])
    changes = [
        ("I", acct(1, "one")),
        ("U", acct(1, "one-b", "1.00")),
        ("D", acct(1, "one-b", None)),
        ("I", acct(1, "one-c", "3.00")),  # insert -> update -> delete -> insert ends as this insert
        ("U", acct(2, "never seen", "2.50")),  # update of an unknown key ends as an insert
        ("D", {"id": 3}),  # delete of a missing key is harmless
        ("I", acct(4, "four")),
        ("D", {"id": 4}),  # inserted then deleted in the batch: absent
        ("U", acct(5, "five-b", "5.55", 'a, "quoted"\nnote')),  # existing row updated
        ("D", {"id": 6}),  # existing row deleted
    ]
    result = put(wh, stager, ACCOUNTS, changes)
    assert result.applied
    assert (result.inserted, result.deleted) == (3, 3)
    assert rows(wh, ACCOUNTS) == [
        row(1, "one-c", "3.00"),
        row(2, "never seen", "2.50"),
        row(5, "five-b", "5.55", 'a, "quoted"\nnote'),
    ]


@also_with_old_images
def test_a_batch_with_one_change_per_key_is_counted_without_reducing(
    wh: SqlWarehouse, stager: Stager
) -> None:
    wh.ensure_table(ACCOUNTS)
    put(wh, stager, ACCOUNTS, [("I", acct(i, f"n{i}")) for i in range(1, 4)])
    result = put(wh, stager, ACCOUNTS, [("U", acct(1, "x")), ("D", {"id": 2}), ("I", acct(9, "y"))])
    assert (result.inserted, result.deleted) == (2, 1)
    assert rows(wh, ACCOUNTS) == [row(1, "x"), row(3, "n3"), row(9, "y")]


@also_with_old_images
def test_unchanged_columns_keep_the_target_value(wh: SqlWarehouse, stager: Stager) -> None:
    wh.ensure_table(ACCOUNTS)
    put(
        wh, stager, ACCOUNTS, [("I", acct(1, "a", "1.00", "big toast 1")), ("I", acct(2, "b", "2.00", "big"))]
    )
    changes = [
        ("U", acct(1, "a2", "1.50", None)),  # note not sent: keep "big toast 1"
        ("U", acct(2, "b2", "2.50", "new note")),  # sent: overwrite
        ("U", acct(3, "c", "3.00", None)),  # unknown key, note not sent: inserted with NULL
    ]
    put(wh, stager, ACCOUNTS, changes, unchanged={0: ["note", "name"], 2: ["note"]})
    assert rows(wh, ACCOUNTS) == [
        row(1, "a", "1.50", "big toast 1"),
        row(2, "b2", "2.50", "new note"),
        row(3, "c", "3.00", None),
    ]


@also_with_old_images
def test_unchanged_column_names_with_quotes_commas_and_braces_are_matched_exactly(
    wh: SqlWarehouse, stager: Stager
) -> None:
    odd = TableSchema(
        TableId("app", "odd"),
        (Column.of("id", "integer", nullable=False), Column.of('a, "b} \\', "text"), Column.of("a", "text")),
        ("id",),
    )
    wh.ensure_table(odd)
    put(wh, stager, odd, [("I", {"id": 1, 'a, "b} \\': "kept", "a": "old"})])
    put(wh, stager, odd, [("U", {"id": 1, "a": "new"})], unchanged={0: ['a, "b} \\']})
    assert rows(wh, odd) == [(1, "kept", "new")]


@also_with_old_images
def test_composite_and_key_only_tables_merge(wh: SqlWarehouse, stager: Stager) -> None:
    links = TableSchema(
        TableId("app", "links"),
        (Column.of("a", "integer", nullable=False), Column.of("b", "text", nullable=False)),
        ("a", "b"),
    )
    wh.ensure_table(links)
    put(wh, stager, links, [("I", {"a": 1, "b": "x"}), ("I", {"a": 1, "b": "y"}), ("I", {"a": 2, "b": "x"})])
    put(wh, stager, links, [("D", {"a": 1, "b": "x"}), ("U", {"a": 2, "b": "x"}), ("I", {"a": 2, "b": "x"})])
    assert rows(wh, links) == [(1, "y"), (2, "x")]


@also_with_old_images
def test_replaying_an_applied_batch_changes_nothing(wh: SqlWarehouse, stager: Stager) -> None:
    wh.ensure_table(ACCOUNTS)
    manifest, path = stager.batch(ACCOUNTS, [("I", acct(1, "a")), ("I", acct(2, "b"))])
    assert wh.apply(manifest, ACCOUNTS, path).applied
    put(wh, stager, ACCOUNTS, [("D", {"id": 1})])
    again = wh.apply(manifest, ACCOUNTS, path)  # would resurrect id 1 if applied twice
    assert (again.applied, again.inserted, again.deleted) == (False, 0, 0)
    assert rows(wh, ACCOUNTS) == [row(2, "b")]
    assert len(ledger(wh)) == 2
    assert wh.table_states()[ACCOUNTS.table].batches == 2


@also_with_old_images
def test_an_error_before_commit_leaves_target_and_ledger_untouched(
    wh: SqlWarehouse, stager: Stager, monkeypatch: pytest.MonkeyPatch
) -> None:
    wh.ensure_table(ACCOUNTS)
    put(wh, stager, ACCOUNTS, [("I", acct(1, "a")), ("I", acct(2, "b"))])
    before_rows, before_ledger, before_states = rows(wh, ACCOUNTS), ledger(wh), wh.table_states()
    manifest, path = stager.batch(
        ACCOUNTS, [("U", acct(1, "changed")), ("D", {"id": 2}), ("I", acct(3, "c"))]
    )

    def boom(name: str) -> None:
        raise RuntimeError(f"injected at {name}")

    monkeypatch.setattr(sql_base, "crash_point", boom)
    with pytest.raises(RuntimeError, match="injected at mid_merge"):
        wh.apply(manifest, ACCOUNTS, path)
    assert (rows(wh, ACCOUNTS), ledger(wh), wh.table_states()) == (before_rows, before_ledger, before_states)
    monkeypatch.undo()
    assert wh.apply(
        manifest, ACCOUNTS, path
    ).applied  # the same connection is usable and the batch is not spent
    assert rows(wh, ACCOUNTS) == [row(1, "changed"), row(3, "c")]


_CHILD = """
import sys
from datetime import datetime
from pathlib import Path
from replicator.model import Manifest, Position, TableId, TableSchema, Column
from replicator.warehouses.duckdb import DuckDBWarehouse
from replicator.warehouses.postgres import PostgresWarehouse
kind, address, bid, first, last, path = sys.argv[1:]
if kind == "redshift":
    from tests.helpers.redshift_shim import RedshiftShim, open_stand_in
    parts = dict(p.split("=", 1) for p in address.split())
    shim = RedshiftShim(parts.get("host", "127.0.0.1"), int(parts.get("port", "5432")))
schema = TableSchema(TableId("app", "accounts"), (Column.of("id", "bigint", nullable=False),
    Column.of("name", "text"), Column.of("balance", "numeric(12,2)"), Column.of("note", "text")), ("id",))
if kind == "redshift":
    wh = open_stand_in(shim, address)
else:
    wh = DuckDBWarehouse(address) if kind == "duckdb" else PostgresWarehouse(address)
m = Manifest(schema.table, bid, Position(first), Position(last), 3, 1, 1, 1, 0, path, (), ("id",), None, None,
    datetime.now())
wh.apply(m, schema, Path(path))
print("committed")
"""


def test_a_process_killed_mid_merge_leaves_target_and_ledger_untouched(
    target: Target, stager: Stager
) -> None:
    wh = target.open()
    wh.setup()
    wh.ensure_table(ACCOUNTS)
    put(wh, stager, ACCOUNTS, [("I", acct(1, "a")), ("I", acct(2, "b"))])
    wh.close()  # DuckDB allows one writing process per file
    manifest, path = stager.batch(
        ACCOUNTS, [("U", acct(1, "changed")), ("D", {"id": 2}), ("I", acct(3, "c"))]
    )
    args = [
        target.kind,
        target.address,
        manifest.batch_id,
        manifest.first.value,
        manifest.last.value,
        str(path),
    ]
    env = {**os.environ, "REPLICATOR_CRASH_AT": "mid_merge"}
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHILD), *args],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stderr
    assert "committed" not in child.stdout
    wh = target.open()
    wh.setup()
    assert rows(wh, ACCOUNTS) == [row(1, "a"), row(2, "b")]
    assert len(ledger(wh)) == 1
    assert wh.apply(manifest, ACCOUNTS, path).applied
    assert rows(wh, ACCOUNTS) == [row(1, "changed"), row(3, "c")]
    wh.close()


def test_table_states_report_what_was_applied(wh: SqlWarehouse, stager: Stager) -> None:
    assert wh.table_states() == {}
    wh.ensure_table(ACCOUNTS)
    started = datetime.now(UTC)
    m1, p1 = stager.batch(ACCOUNTS, [("I", acct(1, "a")), ("I", acct(2, "b"))])
    m2, p2 = stager.batch(ACCOUNTS, [("D", {"id": 1}), ("U", acct(2, "c")), ("I", acct(3, "d"))])
    wh.apply(m1, ACCOUNTS, p1)
    wh.apply(m2, ACCOUNTS, p2)
    state = wh.table_states()[ACCOUNTS.table]
    assert (state.applied_through, state.batches, state.rows) == (Position("000000000005"), 2, 5)
    assert state.last_commit_time == m2.max_commit_time
    assert state.last_applied_at is not None
    assert started - timedelta(minutes=5) < state.last_applied_at < datetime.now(UTC) + timedelta(minutes=5)
    assert ledger(wh) == [
        (m.batch_id, "app", "accounts", m.first.value, m.last.value, m.rows, m.inserts, m.updates, m.deletes,
         m.min_commit_time, m.max_commit_time)
        for m in (m1, m2)
    ]  # fmt: skip


def test_a_batch_with_an_unknown_op_is_refused(wh: SqlWarehouse, stager: Stager) -> None:
    wh.ensure_table(ACCOUNTS)
    manifest, path = stager.batch(ACCOUNTS, [("I", acct(1, "a")), ("X", acct(2, "b"))])
    with pytest.raises(ValueError, match="_op"):
        wh.apply(manifest, ACCOUNTS, path)
    assert rows(wh, ACCOUNTS) == []
    assert ledger(wh) == []


# -- values ----------------------------------------------------------------------------------------------

ALL_TYPES = TableSchema(
    TableId("types", "every kind"),
    (
        Column.of("id", "integer", nullable=False),
        Column.of("i2", "smallint"),
        Column.of("i4", "integer"),
        Column.of("i8", "bigint"),
        Column.of("dec", "numeric(18,4)"),
        Column.of("num", "numeric"),
        Column.of("f4", "real"),
        Column.of("f8", "double"),
        Column.of("flag", "boolean"),
        Column.of("txt", "text"),
        Column.of("vc", "varchar(40)"),
        Column.of("ch", "char(5)"),
        Column.of("d", "date"),
        Column.of("ts", "timestamp"),
        Column.of("tstz", "timestamptz"),
        Column.of("t", "time"),
        Column.of("u", "uuid"),
        Column.of("j", "json"),
        Column.of("bin", "bytea"),
    ),
    ("id",),
)
TEXTS = [
    "",
    "NULL",
    'say "hi", then\nleave',
    "tab\tcr\r\nback\\slash 'single'",
    "unicode ✓ 日本語 🎉",
    " padded ",
]
VALUES: dict[str, list[Any]] = {
    "i2": [-32768, 32767, 0],
    "i4": [-(2**31), 2**31 - 1, 7],
    "i8": [-(2**63), 2**63 - 1, 42],
    "dec": [Decimal("-12345678901234.5678"), Decimal("0.0001"), Decimal("0.0000")],
    # unconstrained numeric is staged as its exact text (no Arrow decimal holds every value)
    "num": ["123.4567890123", "-0.5", "98765432109876543210"],
    "f4": [struct.unpack("f", struct.pack("f", 0.1))[0], 3.4028234663852886e38, -1.5],
    "f8": [0.1, 1 / 3, -1.7976931348623157e308],
    "flag": [True, False, True],
    "txt": TEXTS,
    "vc": list(reversed(TEXTS)),
    "ch": ["abcde", "ab   ", "✓✓✓✓✓"],
    "d": [date(1970, 1, 1), date(2024, 2, 29), date(9999, 12, 31)],
    "ts": [datetime(2024, 1, 2, 3, 4, 5, 678901), datetime(1999, 12, 31, 23, 59, 59), datetime(2000, 1, 1)],
    "tstz": [datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), datetime(1990, 6, 1, tzinfo=UTC), T0],
    "t": [time(23, 59, 59, 999999), time(0, 0), time(12, 30, 1, 5)],
    "u": [str(uuid.UUID(int=1)), "6f1c2f5e-9d3a-4b8e-a1c2-0123456789ab", str(uuid.UUID(int=2**128 - 1))],
    "j": ['{"a": [1, 2, {"b": "c,\\n\\"q\\""}], "u": "✓"}', "[]", '"text"'],
    "bin": [b"\x00\x01\xff", b"", b'quote" comma, \\x00 newline\n'],
}


def _typed_rows(n: int, shift: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        values: dict[str, Any] = {"id": i}
        for name, samples in VALUES.items():
            values[name] = samples[(i + shift) % len(samples)]
        out.append(values)
    out.append({"id": n})  # every column NULL but the key
    return out


def _expected(batch: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    def norm(c: Column, v: Any) -> Any:
        if v is None:
            return None
        if c.type.kind == "json":
            return json.loads(v)
        return Decimal(v) if c.type.kind == "numeric" else v

    return [tuple(norm(c, r.get(c.name)) for c in ALL_TYPES.columns) for r in batch]


@also_with_old_images
@pytest.mark.parametrize("n", [6])
def test_every_type_round_trips_through_insert_and_update(
    wh: SqlWarehouse, stager: Stager, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_warehouse, "_SLICE_ROWS", 4)  # PostgreSQL: the file is COPYed in several slices
    wh.ensure_table(ALL_TYPES)
    inserted = _typed_rows(n, 0)
    put(wh, stager, ALL_TYPES, [("I", r) for r in inserted])
    assert rows(wh, ALL_TYPES) == _expected(inserted)
    updated = _typed_rows(n, 1)
    updated[-1], updated[0] = updated[0] | {"id": n}, {"id": 0}  # value -> NULL and NULL -> value too
    put(wh, stager, ALL_TYPES, [("U", r) for r in updated])
    assert rows(wh, ALL_TYPES) == _expected(updated)


def test_a_duckdb_file_named_like_a_replicated_schema_still_works(tmp_path: Path) -> None:
    from replicator.model import Column, TableId, TableSchema
    from replicator.values import parse_type

    schema = TableSchema(TableId("dbo", "t"), (Column("id", parse_type("bigint"), False),), ("id",))
    wh = DuckDBWarehouse(str(tmp_path / "dbo.duckdb"))
    try:
        wh.setup()
        wh.ensure_table(schema)
        assert wh.table_states() == {}
    finally:
        wh.close()


# -- schema evolution ------------------------------------------------------------------------------------


def _with(schema: TableSchema, *columns: Column, replace: dict[str, str] | None = None) -> TableSchema:
    """``schema`` with some column types replaced and ``columns`` appended (a source-side DDL change)."""
    kept = tuple(Column.of(c.name, (replace or {}).get(c.name, str(c.type)), nullable=c.nullable)
                 for c in schema.columns)  # fmt: skip
    return TableSchema(schema.table, kept + columns, schema.primary_key)


@also_with_old_images
def test_a_new_source_column_is_added_before_the_batch_that_needs_it(
    wh: SqlWarehouse, stager: Stager
) -> None:
    wh.ensure_table(ACCOUNTS)
    put(wh, stager, ACCOUNTS, [("I", acct(1, "a")), ("I", acct(2, "b"))])
    wider = _with(ACCOUNTS, Column.of("email", "varchar(40)"), Column.of("visits", "integer"))
    put(wh, stager, wider, [("U", acct(2, "b2") | {"email": "b@x", "visits": 3}), ("I", acct(3, "c"))])
    assert rows(wh, wider) == [
        (*row(1, "a"), None, None),
        (*row(2, "b2"), "b@x", 3),
        (*row(3, "c"), None, None),
    ]
    assert [r[2] for r in ledger(wh)] == ["accounts", "accounts"]


@also_with_old_images
def test_a_longer_varchar_widens_the_column_and_a_shorter_one_just_fits(
    wh: SqlWarehouse, stager: Stager
) -> None:
    narrow = _with(ACCOUNTS, replace={"name": "varchar(4)"})
    wh.ensure_table(narrow)
    put(wh, stager, narrow, [("I", acct(1, "abcd"))])
    wide = _with(ACCOUNTS, replace={"name": "varchar(30)"})
    put(wh, stager, wide, [("I", acct(2, "a name of thirty characters ✓✓"))])
    put(wh, stager, narrow, [("U", acct(1, "dcba"))])  # staged before the change, applied after: fits
    assert rows(wh, wide) == [row(1, "dcba"), row(2, "a name of thirty characters ✓✓")]


@also_with_old_images
def test_int_to_bigint_and_more_numeric_digits_widen_where_the_engine_can(
    target: Target, wh: SqlWarehouse, stager: Stager
) -> None:
    small = TableSchema(
        TableId("app", "meters"),
        (
            Column.of("id", "integer", nullable=False),
            Column.of("reading", "integer"),
            Column.of("v", "numeric(6,2)"),
        ),
        ("id",),
    )
    wh.ensure_table(small)
    put(wh, stager, small, [("I", {"id": 1, "reading": 7, "v": Decimal("1234.56")})])
    big = _with(small, replace={"reading": "bigint", "v": "numeric(14,4)"})
    change = [("I", {"id": 2, "reading": 2**40, "v": Decimal("1234567890.1234")})]
    if target.kind == "redshift":  # ALTER COLUMN TYPE only lengthens VARCHARs there
        with pytest.raises(IncompatibleSchemaChange, match="reading widened from integer to bigint"):
            put(wh, stager, big, change)
        assert rows(wh, small) == [(1, 7, Decimal("1234.56"))]
        return
    put(wh, stager, big, change)
    assert rows(wh, big) == [(1, 7, Decimal("1234.5600")), (2, 2**40, Decimal("1234567890.1234"))]


def test_an_incompatible_change_stops_the_table_and_records_why(wh: SqlWarehouse, stager: Stager) -> None:
    wh.ensure_table(ACCOUNTS)
    put(wh, stager, ACCOUNTS, [("I", acct(1, "a"))])
    before = ledger(wh)
    broken = _with(ACCOUNTS, replace={"note": "integer"})
    with pytest.raises(IncompatibleSchemaChange, match="column note changed from text to integer"):
        put(wh, stager, broken, [("U", {"id": 1, "name": "x", "balance": Decimal("1.00"), "note": 5})])
    assert (rows(wh, ACCOUNTS), ledger(wh)) == ([row(1, "a")], before)
    (reason,) = wh.schema_errors().values()
    assert "app.accounts: column note changed from text to integer" in reason
    put(wh, stager, ACCOUNTS, [("U", acct(1, "fixed"))])  # a batch in the known shape goes on
    assert rows(wh, ACCOUNTS) == [row(1, "fixed")]


@also_with_old_images
@pytest.mark.parametrize("dropped_columns", ["null", "keep"])
def test_a_column_dropped_at_the_source_stays_in_the_target(
    wh: SqlWarehouse, stager: Stager, dropped_columns: str
) -> None:
    wh.configure({ACCOUNTS.table: TableOptions(dropped_columns=dropped_columns)})
    wh.ensure_table(ACCOUNTS)
    put(wh, stager, ACCOUNTS, [("I", acct(1, "a", note="n1")), ("I", acct(2, "b", note="n2"))])
    without = TableSchema(ACCOUNTS.table, ACCOUNTS.columns[:3], ("id",))
    put(wh, stager, without, [("U", {"id": 1, "name": "a2", "balance": Decimal("1.00")}),
                              ("I", {"id": 3, "name": "c", "balance": Decimal("3.00")})])  # fmt: skip
    kept = "n1" if dropped_columns == "keep" else None
    assert rows(wh, ACCOUNTS) == [row(1, "a2", "1.00", kept), row(2, "b", note="n2"), row(3, "c", "3.00")]


# -- soft deletes ----------------------------------------------------------------------------------------


@also_with_old_images
def test_soft_deletes_mark_rows_and_a_later_insert_revives_them(wh: SqlWarehouse, stager: Stager) -> None:
    wh.configure({ACCOUNTS.table: TableOptions(deletes="soft")})
    wh.ensure_table(ACCOUNTS)
    put(wh, stager, ACCOUNTS, [("I", acct(1, "a")), ("I", acct(2, "b")), ("I", acct(3, "c"))])
    put(wh, stager, ACCOUNTS, [("D", {"id": 1}), ("U", acct(2, "b2")), ("D", {"id": 9})])
    marks = 'SELECT "id", "name", "_deleted", "_deleted_at" IS NOT NULL FROM "app"."accounts" ORDER BY "id"'
    assert query(wh, marks) == [(1, "a", True, True), (2, "b2", False, False), (3, "c", False, False)]
    put(wh, stager, ACCOUNTS, [("I", acct(1, "again")), ("D", {"id": 3})])
    assert query(wh, marks) == [(1, "again", False, False), (2, "b2", False, False), (3, "c", True, True)]


# -- Redshift only: retries ------------------------------------------------------------------------------


def test_redshift_retries_an_apply_that_hit_a_serializable_isolation_violation(
    pg_dsn: str, redshift_shim: RedshiftShim, stager: Stager, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redshift only (error 1023), so not parametrised over the targets.
    wh = Target("redshift", pg_dsn, redshift_shim).open()
    assert isinstance(wh, RedshiftWarehouse)
    wh._retry = RetryPolicy(attempts=3, base_seconds=0.01)
    wh.setup()
    wh.ensure_table(ACCOUNTS)
    real = wh._execute
    failures: list[str] = []

    def flaky(sql: str) -> None:
        if sql.startswith("MERGE") and len(failures) < 2:
            failures.append(sql)
            raise redshift_connector.ProgrammingError(  # type: ignore[attr-defined]
                {"S": "ERROR", "C": "XX000", "M": "1023", "D": "Serializable isolation violation on table"}
            )
        real(sql)

    monkeypatch.setattr(wh, "_execute", flaky)
    assert put(wh, stager, ACCOUNTS, [("I", acct(1, "a"))]).applied
    assert len(failures) == 2
    assert rows(wh, ACCOUNTS) == [row(1, "a")]
    assert len(ledger(wh)) == 1
    wh.close()
