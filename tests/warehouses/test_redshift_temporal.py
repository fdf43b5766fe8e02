"""Redshift's dates, times and timestamps: what its types hold loads exactly, BC years, years past 9999 and
24:00:00 included; what they cannot hold (an infinity, a date past 294276 AD) stops the table with the reason,
the same for a column there from the start and one added later. Redshift's code path on PostgreSQL through the
shim (``tests/helpers/redshift_shim.py``), whose stand-in for COPY reads the Parquet integers, not Python
datetimes (which end at 9999 and have no 24:00:00)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
import redshift_connector

from replicator.model import Column, TableId, TableSchema
from replicator.values import temporal
from replicator.warehouses import RedshiftWarehouse, RoundFailed
from replicator.warehouses.redshift import FIRST_DAY, LAST_DAY, ValueOutOfRange, unfit_temporal
from tests.helpers.redshift_shim import STAND_IN, RedshiftShim, open_stand_in
from tests.helpers.warehouse import Stager, query, rows


def _table(name: str, *columns: tuple[str, str]) -> TableSchema:
    cols = (Column.of("id", "bigint", nullable=False), *(Column.of(n, t) for n, t in columns))
    return TableSchema(TableId("app", name), cols, ("id",))


def _stored(kind: str, text: str | None) -> int | None:
    """The integer the stage writes for a value (days or microseconds from 1970), as pyarrow takes it."""
    if text is None:
        return None
    texts = pa.array([text])
    if kind == "date":
        parsed = temporal.parse_date(texts)
    elif kind == "time":
        parsed = temporal.parse_time(texts)
    else:
        parsed = temporal.parse_timestamp(texts, zoned=kind == "timestamptz")
    value: int = parsed.cast(pa.int32() if kind == "date" else pa.int64())[0].as_py()
    return value


def _row(schema: TableSchema, key: int, **texts: str | None) -> dict[str, Any]:
    kinds = {c.name: c.type.kind for c in schema.columns}
    return {"id": key, **{c: _stored(kinds[c], v) for c, v in texts.items()}}


def _as_text(wh: RedshiftWarehouse, schema: TableSchema) -> list[tuple[Any, ...]]:
    """The target's values as PostgreSQL's text (timestamptz in UTC, whatever the session's TimeZone)."""
    cols = ", ".join(
        f"({c.name} AT TIME ZONE 'UTC')::text" if c.type.kind == "timestamptz" else f"{c.name}::text"
        for c in schema.columns
        if c.name != "id"
    )
    return query(wh, f"SELECT id, {cols} FROM app.{schema.table.name} ORDER BY id")


EDGES = {  # what Redshift holds, at its ends and past Python's datetime
    "d": ("date", ["4714-11-24 BC", "0044-03-15 BC", "10000-01-01", "294276-12-31"]),
    "ts": (
        "timestamp",
        [
            "4714-11-24 00:00:00 BC",
            "0001-01-01 00:00:00",
            "10000-01-01 00:00:00.5",
            "294246-12-31 23:59:59.999999",
        ],
    ),
    "tz": (
        "timestamptz",
        [
            "0044-03-15 10:00:00+00 BC",
            "12345-06-07 08:09:10+05",
            "9999-12-31 23:59:59+00",
            "2024-02-29 12:00:00-00:30",
        ],
    ),
    "t": ("time", ["24:00:00", "00:00:00", "23:59:59.999999", "12:34:56.789"]),
}
# PostgreSQL's text of each value above, read back in UTC.
EXPECTED = {
    "d": ["4714-11-24 BC", "0044-03-15 BC", "10000-01-01", "294276-12-31"],
    "ts": [
        "4714-11-24 00:00:00 BC",
        "0001-01-01 00:00:00",
        "10000-01-01 00:00:00.5",
        "294246-12-31 23:59:59.999999",
    ],
    "tz": ["0044-03-15 10:00:00 BC", "12345-06-07 03:09:10", "9999-12-31 23:59:59", "2024-02-29 12:30:00"],
    "t": ["24:00:00", "00:00:00", "23:59:59.999999", "12:34:56.789"],
}


def test_dates_and_timestamps_redshift_holds_load_exactly_from_the_start_and_in_columns_added_later(
    pg_dsn: str, redshift_shim: RedshiftShim, stager: Stager
) -> None:
    first = _table("events", *((n, kind) for n, (kind, _) in EDGES.items()))
    later = TableSchema(
        first.table, (*first.columns, *(Column.of(n + "2", kind) for n, (kind, _) in EDGES.items())), ("id",)
    )
    wh = open_stand_in(redshift_shim, pg_dsn)
    try:
        wh.setup()
        wh.ensure_table(first)
        changes = [("I", _row(first, i, **{n: v[i] for n, (_, v) in EDGES.items()})) for i in range(4)]
        manifest, path = stager.batch(first, changes)
        assert wh.apply(manifest, first, path).applied
        # The source adds the same four columns: the next batch's shape has them (ADD COLUMN on the target).
        added = [
            ("I", _row(later, 10 + i, **{n + "2": v[i] for n, (_, v) in EDGES.items()})) for i in range(4)
        ]
        manifest, path = stager.batch(later, added)
        assert wh.apply(manifest, later, path).applied
        got = _as_text(wh, later)
    finally:
        wh.close()
    n = len(EDGES)
    assert [r[1 : 1 + n] for r in got[:4]] == [tuple(EXPECTED[c][i] for c in EDGES) for i in range(4)]
    assert [r[1 + n :] for r in got[4:]] == [tuple(EXPECTED[c][i] for c in EDGES) for i in range(4)]
    assert all(v is None for r in got[:4] for v in r[1 + n :])  # rows from before the columns existed


GOOD = {"date": "2024-01-02", "timestamp": "2024-01-02 03:04:05", "timestamptz": "2024-01-02 03:04:05+00"}


@pytest.mark.parametrize(
    ("kind", "value", "shown"),
    [
        ("timestamp", "infinity", "such as infinity"),
        ("timestamptz", "-infinity", "such as -infinity"),
        ("date", "infinity", "such as infinity"),
        ("date", "5874897-12-31", "outside that range"),  # PostgreSQL's last date; Redshift's is 294276-12-31
    ],
)
def test_a_value_redshift_cannot_hold_stops_its_table_with_the_reason_from_the_start_or_when_added(
    kind: str, value: str, shown: str, pg_dsn: str, redshift_shim: RedshiftShim, stager: Stager
) -> None:
    start = _table("from_start", ("v", kind))
    before = _table("added_later")
    after = _table("added_later", ("v", kind))
    wh = open_stand_in(redshift_shim, pg_dsn)
    try:
        wh.setup()
        for schema in (start, before):
            wh.ensure_table(schema)
        manifest, path = stager.batch(before, [("I", {"id": 1})])
        assert wh.apply(manifest, before, path).applied
        reasons = []
        for schema in (start, after):
            changes = [("I", _row(schema, 2, v=GOOD[kind])), ("I", _row(schema, 3, v=value))]
            manifest, path = stager.batch(schema, changes)
            with pytest.raises(ValueOutOfRange) as caught:
                wh.apply(manifest, schema, path)
            reasons.append(str(caught.value).replace(str(schema.table), "<table>"))
            assert manifest.batch_id not in {
                r[0] for r in query(wh, "SELECT batch_id FROM _replicator.batches")
            }
        # Nothing of the refused batches landed: the good row waits with the bad one, in order.
        assert rows(wh, start) == []
        assert [r[0] for r in rows(wh, after)] == [1]
    finally:
        wh.close()
    assert reasons[0] == reasons[1], reasons  # the same reason whenever the column appeared
    assert f"column v ({kind}): 1 value {shown}" in reasons[0]
    assert "4713 BC to 294276 AD and no infinity" in reasons[0]
    assert "text in schemas/" in reasons[0] and "resync" in reasons[0]
    assert "5874897" not in reasons[0]  # a value is never shown (only the word infinity)


def test_the_check_runs_before_copy_and_names_the_table_to_set_aside_in_a_round(
    pg_dsn: str, redshift_shim: RedshiftShim, stager: Stager
) -> None:
    good, bad = _table("good", ("v", "timestamp")), _table("bad", ("v", "timestamp"))
    parts = dict(p.split("=", 1) for p in pg_dsn.split())
    # No loader: the warehouse would send Redshift's COPY FROM S3 itself (PostgreSQL would refuse its SQL).
    wh = RedshiftWarehouse(
        lambda: redshift_connector.connect(
            host="127.0.0.1",
            port=redshift_shim.port,
            database=parts["dbname"],
            user=parts.get("user", "postgres"),
            password="unused",
            ssl=False,
        ),
        staging_url="s3://unused",
        iam_role="arn:aws:iam::000000000000:role/unused",
        dialect=STAND_IN,  # PostgreSQL's spellings of SUPER etc.; no loader, so _load sends the COPY itself
        physical_layout=False,
    )
    stand_in = open_stand_in(redshift_shim, pg_dsn)
    try:
        stand_in.setup()
        for schema in (good, bad):
            stand_in.ensure_table(schema)
        m_bad, p_bad = stager.batch(bad, [("I", _row(bad, 1, v="-infinity"))])
        with pytest.raises(ValueOutOfRange, match="such as -infinity"):
            wh.apply(m_bad, bad, p_bad)  # refused before COPY, not by PostgreSQL's parser
        m_good, p_good = stager.batch(good, [("I", _row(good, 1, v="10000-01-01 00:00:00"))])
        with pytest.raises(RoundFailed) as caught:
            stand_in.apply_round([(m_good, good, p_good), (m_bad, bad, p_bad)])
        assert caught.value.table == bad.table and isinstance(caught.value.error, ValueOutOfRange)
        assert stand_in.apply_round([(m_good, good, p_good)])[0].applied  # the round goes on without it
        assert _as_text(stand_in, good) == [(1, "10000-01-01 00:00:00")]
    finally:
        wh.close()
        stand_in.close()


def test_outside_finds_what_a_narrower_range_cannot_hold_and_nothing_else() -> None:
    ts = temporal.parse_timestamp(
        pa.array(["4714-11-24 00:00:00 BC", "294246-12-31 23:59:59", None, "infinity", "-infinity"]),
        zoned=False,
    )
    assert temporal.outside(ts[:3], FIRST_DAY, LAST_DAY) is None
    assert temporal.outside(ts, FIRST_DAY, LAST_DAY) == (2, "infinity")
    dates = temporal.parse_date(pa.array(["294276-12-31", "294277-01-01", "4714-11-24 BC"]))
    assert temporal.outside(dates, FIRST_DAY, LAST_DAY) == (1, "294277-01-01")
    assert temporal.outside(dates, FIRST_DAY + 1, LAST_DAY) == (2, "294277-01-01")
    assert temporal.outside(pa.nulls(3, pa.date32()), FIRST_DAY, LAST_DAY) is None
    assert temporal.outside(pa.array(["infinity"]), FIRST_DAY, LAST_DAY) is None  # text: not a date


def test_unfit_temporal_reads_only_date_and_timestamp_columns(stager: Stager) -> None:
    schema = _table("mixed", ("note", "text"), ("d", "date"), ("t", "time"))
    _, path = stager.batch(
        schema, [("I", {"id": 1, "note": "infinity", **_row(schema, 1, d="2024-01-01", t="24:00:00")})]
    )
    assert unfit_temporal(schema, path) is None
    _, path = stager.batch(schema, [("I", _row(schema, 1, d="-infinity"))])
    assert "column d (date): 1 value such as -infinity" in (unfit_temporal(schema, path) or "")
