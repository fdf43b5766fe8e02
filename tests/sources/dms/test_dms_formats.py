"""The DMS format matrix: for each combination of endpoint settings, files laid out and encoded as the AWS DMS
S3-target documentation describes are put on the real S3 server, replicated through staging into DuckDB,
and the target table is compared row by row with the state the feed implies.

Every case replays the same story for ``dbo.acct`` (id bigint key, name text, amount numeric(10,2),
opened date): a full load of ids 1-3, then CDC: insert 4, update 1, delete 2, update 4 (a name with a
delimiter, a quote and a newline in it where the format can carry them).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replicator.config import BatchConfig
from replicator.model import Column, TableId, TableSchema
from replicator.sources.dms.source import DmsOptions
from replicator.storage import LocalStore, Quarantine, S3Settings, S3Store
from tests.helpers.dms import pipeline_round

T = TableId("dbo", "acct")
SCHEMA = TableSchema(
    T,
    (
        Column.of("id", "bigint", nullable=False),
        Column.of("name", "text"),
        Column.of("amount", "numeric(10,2)"),
        Column.of("opened", "date"),
    ),
    ("id",),
)
TRICKY = 'Ann, "the" \nsecond'
Row = tuple[str, str, tuple[str | None, ...]]  # (op, commit ts, values); values None = SQL NULL
# in source order
LOAD: list[Row] = [
    ("I", "2024-01-31 09:00:00.000000", ("1", "one", "10.00", "2024-01-01")),
    ("I", "2024-01-31 09:00:00.000000", ("2", "two", None, "2024-01-02")),
    ("I", "2024-01-31 09:00:00.000000", ("3", "NULL", "30.50", None)),  # the text NULL, quoted in CSV
]
CDC: list[Row] = [
    ("I", "2024-01-31 23:59:00.000000", ("4", "four", "4.00", "2024-02-01")),
    ("U", "2024-02-01 00:00:01.000000", ("1", "uno", "11.00", "2024-01-01")),
    ("D", "2024-02-01 00:00:02.000000", ("2", "two", None, "2024-01-02")),
    ("U", "2024-02-01 10:00:00.000000", ("4", TRICKY, "4.50", "2024-02-01")),
]
EXPECTED = {
    1: (1, "uno", Decimal("11.00"), dt.date(2024, 1, 1)),
    3: (3, "NULL", Decimal("30.50"), None),
    4: (4, TRICKY, Decimal("4.50"), dt.date(2024, 2, 1)),
}

# CdcInsertsOnly: DMS writes inserts only (updates and deletes never reach the files); CdcInsertsAndUpdates:
# no deletes. Without IncludeOpForFullLoad those CDC files have no Op column.
INSERTS_ONLY = {
    1: (1, "one", Decimal("10.00"), dt.date(2024, 1, 1)),
    2: (2, "two", None, dt.date(2024, 1, 2)),
    3: EXPECTED[3],
    4: (4, "four", Decimal("4.00"), dt.date(2024, 2, 1)),
}
INSERTS_AND_UPDATES = {**EXPECTED, 2: INSERTS_ONLY[2]}
NOSUP = "@@nosup@@"
# UseCsvNoSupValue: the update of id 1 did not carry name (not in the supplemental log): the target keeps it.
CDC_NOSUP: list[Row] = [CDC[0], ("U", CDC[1][1], ("1", NOSUP, "11.00", "2024-01-01")), *CDC[2:]]


@dataclass(frozen=True)
class Case:
    id: str
    options: dict[str, Any] = field(default_factory=dict)
    tricky: bool = True  # the format can carry TRICKY (not with Rfc4180=false)
    cdc_files: Callable[[str], list[str]] = lambda ext: [
        f"20240131-2359000000{ext}",
        f"20240201-1000000000{ext}",
    ]
    expected: dict[int, tuple[Any, ...]] = field(default_factory=lambda: EXPECTED)
    cdc: list[Row] = field(default_factory=lambda: CDC)


def _dated(seq: str, delim: str) -> Callable[[str], list[str]]:
    sep = {"SLASH": "/", "UNDERSCORE": "_", "DASH": "-", "NONE": ""}[delim]
    parts = {"YYYY": "2024", "MM": None, "DD": None, "HH": None}

    def folder(month: str, day: str, hour: str) -> str:
        values = {"YYYY": "2024", "MM": month, "DD": day, "HH": hour}
        order = {"YYYYMMDD": "YYYY MM DD", "YYYYMMDDHH": "YYYY MM DD HH", "YYYYMM": "YYYY MM",
                 "MMYYYYDD": "MM YYYY DD", "DDMMYYYY": "DD MM YYYY"}[seq].split()  # fmt: skip
        return sep.join(values[p] for p in order)

    del parts
    # 31 Jan sorts after 01 Feb by name with DDMMYYYY/MMYYYYDD: the reader must order by date.
    return lambda ext: [
        f"{folder('01', '31', '23')}/20240131-2359000000{ext}",
        f"{folder('02', '01', '10')}/20240201-1000000000{ext}",
    ]


CASES = [
    Case("csv-defaults"),
    Case("csv-header", {"add_column_name": True}),
    Case("csv-header-timestamp", {"add_column_name": True, "timestamp_column_name": "ts"}),
    Case("csv-timestamp-op-full-load", {"timestamp_column_name": "ts", "include_op_for_full_load": True}),
    Case("csv-gzip", {"compression_type": "gzip"}),
    Case("csv-pipe-delimiter", {"csv_delimiter": "|"}),
    Case("csv-multichar-delimiters", {"csv_delimiter": "::", "csv_row_delimiter": "\r\n"}),
    Case("csv-row-delimiter-custom", {"csv_row_delimiter": "~\n", "add_column_name": True}),
    Case("csv-null-empty", {"csv_null_value": ""}),
    Case("csv-null-custom", {"csv_null_value": "\\N"}),
    Case("csv-no-rfc4180", {"rfc_4180": False}, tricky=False),
    Case("csv-parallel-load-segments", {"segments": True}),
    *(
        Case(
            f"csv-dated-{s}-{d}",
            {"date_partition_enabled": True, "date_partition_sequence": s, "date_partition_delimiter": d},
            cdc_files=_dated(s, d),
        )
        for s, d in [
            ("YYYYMMDD", "SLASH"),
            ("YYYYMMDDHH", "SLASH"),
            ("YYYYMM", "UNDERSCORE"),
            ("MMYYYYDD", "DASH"),
            ("DDMMYYYY", "NONE"),
            ("DDMMYYYY", "SLASH"),
        ]
    ),
    Case("parquet-1.0", {"data_format": "parquet", "parquet_version": "1.0"}),
    Case(
        "parquet-2.0-gzip", {"data_format": "parquet", "parquet_version": "2.6", "compression_type": "gzip"}
    ),
    Case(
        "parquet-timestamp-op-full-load",
        {"data_format": "parquet", "timestamp_column_name": "ts", "include_op_for_full_load": True},
    ),
    *(
        Case(
            f"{fmt}-{name}{'-with-op' if op else ''}",
            {**fo, flag: True, "include_op_for_full_load": op},
            expected=expected,
        )
        for fmt, fo in (("csv", {}), ("parquet", {"data_format": "parquet"}))
        for name, flag, expected in (
            ("inserts-only", "cdc_inserts_only", INSERTS_ONLY),
            ("inserts-and-updates", "cdc_inserts_and_updates", INSERTS_AND_UPDATES),
        )
        for op in (False, True)
    ),
    Case(
        "csv-no-sup-value",
        {"use_csv_no_sup_value": True, "csv_no_sup_value": NOSUP},
        cdc=CDC_NOSUP,
        expected={**EXPECTED, 1: (1, "one", Decimal("11.00"), dt.date(2024, 1, 1))},
    ),
    Case(
        "preserve-transactions",
        {"preserve_transactions": True, "cdc_path": "cdc", "timestamp_column_name": "ts"},
    ),
]


def _csv_field(v: str | None, o: dict[str, Any]) -> str:
    null: str = o.get("csv_null_value", "NULL")
    delim = o.get("csv_delimiter", ",")
    if v is None:
        return null
    if not o.get("rfc_4180", True):
        return v
    needs = v == null or any(c in v for c in (delim, '"', "\n", "\r")) or (v == "" and null == "")
    return '"' + v.replace('"', '""') + '"' if (needs or v == "NULL") and v != NOSUP else v


def _csv(rows: list[Row], o: dict[str, Any], *, op: bool) -> bytes:
    ts = bool(o.get("timestamp_column_name"))
    delim, rowd = o.get("csv_delimiter", ","), o.get("csv_row_delimiter", "\n")
    lines = []
    if o.get("add_column_name"):
        lines.append(delim.join([*(["Op"] if op else []), *(["ts"] if ts else []), *SCHEMA.column_names]))
    for op_code, stamp, values in rows:
        fields = [*([op_code] if op else []), *([stamp] if ts else []), *(_csv_field(v, o) for v in values)]
        lines.append(delim.join(fields))
    data = "".join(line + rowd for line in lines).encode()
    return gzip.compress(data) if o.get("compression_type") == "gzip" else data


def _parquet(rows: list[Row], o: dict[str, Any], *, op: bool) -> bytes:
    cols: dict[str, pa.Array] = {}
    if op:
        cols["Op"] = pa.array([r[0] for r in rows], pa.string())
    if o.get("timestamp_column_name"):
        cols["ts"] = pa.array([r[1] for r in rows], pa.string())
    cols["id"] = pa.array([int(r[2][0] or 0) for r in rows], pa.int64())
    cols["name"] = pa.array([r[2][1] for r in rows], pa.string())
    cols["amount"] = pa.array(
        [None if r[2][2] is None else Decimal(r[2][2]) for r in rows], pa.decimal128(10, 2)
    )
    cols["opened"] = pa.array(
        [None if r[2][3] is None else dt.date.fromisoformat(r[2][3]) for r in rows], pa.date32()
    )
    sink = io.BytesIO()
    compression = "gzip" if o.get("compression_type") == "gzip" else "snappy"
    pq.write_table(pa.table(cols), sink, version=o.get("parquet_version", "1.0"), compression=compression)
    return sink.getvalue()


def write_feed(store: S3Store, case: Case) -> None:
    o = case.options
    parquet = o.get("data_format") == "parquet"
    ext = ".parquet" if parquet else (".csv.gz" if o.get("compression_type") == "gzip" else ".csv")
    encode = _parquet if parquet else _csv
    cdc = case.cdc
    if not case.tricky:
        cdc = [(a, b, tuple(v if v != TRICKY else "plain" for v in c)) for a, b, c in cdc]
    full_op = bool(o.get("include_op_for_full_load"))
    cdc_op = True
    if o.get("cdc_inserts_only") or o.get("cdc_inserts_and_updates"):
        kept = "I" if o.get("cdc_inserts_only") else "IU"
        cdc = [r for r in cdc if r[0] in kept]
        cdc_op = full_op  # DMS writes the Op column in these feeds only with IncludeOpForFullLoad
    if o.get("segments"):  # parallel load: one folder per segment, each with its own counter
        store.put(f"dbo/acct/SEGMENT1/LOAD00000001{ext}", encode(LOAD[:2], o, op=full_op))
        store.put(f"dbo/acct/SEGMENT2/LOAD00000001{ext}", encode(LOAD[2:], o, op=full_op))
    else:
        store.put(f"dbo/acct/LOAD00000001{ext}", encode(LOAD[:1], o, op=full_op))
        store.put(f"dbo/acct/LOAD0000000A{ext}", encode(LOAD[1:], o, op=full_op))  # hex: A after 9
    if o.get("preserve_transactions"):
        txn_o = {**o, "add_column_name": False}
        ts = bool(o.get("timestamp_column_name"))
        for name, part in (
            ("CDC_TXN-20240131-2359000000-00001.csv", cdc[:2]),
            ("CDC_TXN-20240201-1000000000-00002.csv", cdc[2:]),
        ):
            lines = []
            for op_code, stamp, values in part:
                # rows of another table interleave, in commit order
                lines.append(",".join(["I", "other", "dbo", *([stamp] if ts else []), "7"]))
                lines.append(
                    ",".join(
                        [
                            op_code,
                            "acct",
                            "dbo",
                            *([stamp] if ts else []),
                            *(_csv_field(v, txn_o) for v in values),
                        ]
                    )
                )
            store.put(f"cdc/{name}", "".join(line + "\n" for line in lines).encode())
        return
    first, second = case.cdc_files(ext)
    for name, part in ((second, cdc[2:]), (first, cdc[:2])):  # second written first: listing order decides
        if part:  # DMS writes no file for a period without changes it records
            store.put(f"dbo/acct/{name}", encode(part, o, op=cdc_op))


def replicate(
    store: S3Store, options: DmsOptions, tmp_path: Path, tables: dict[TableId, TableSchema]
) -> duckdb.DuckDBPyConnection:
    source = pipeline_round(store, tables, tmp_path, options, BatchConfig(max_rows=2))
    assert source.problems() == []
    assert Quarantine(LocalStore(tmp_path / "staging")).items() == []
    return duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_dms_format_replicates_to_the_expected_rows(
    case: Case, tmp_path: Path, s3_settings: S3Settings, s3_bucket: str
) -> None:
    store = S3Store(s3_bucket, "dms", s3_settings)
    write_feed(store, case)
    settings = {k: v for k, v in case.options.items() if k not in ("segments", "parquet_version")}
    tables = {T: SCHEMA}
    if case.options.get("preserve_transactions"):
        other = TableId("dbo", "other")
        tables[other] = TableSchema(other, (Column.of("k", "bigint", nullable=False),), ("k",))
    con = replicate(store, DmsOptions(**settings), tmp_path, tables)
    got = {r[0]: tuple(r) for r in con.execute("SELECT id, name, amount, opened FROM dbo.acct").fetchall()}
    expected = dict(case.expected)
    if not case.tricky:
        # Without RFC 4180 quoting nothing tells the text NULL from the marker, and no field can hold a
        # delimiter or a row break: DMS's own limits of that setting.
        expected[4] = (4, "plain", Decimal("4.50"), dt.date(2024, 2, 1))
        expected[3] = (3, None, Decimal("30.50"), None)
    assert got == expected


def test_columns_added_at_the_source_appear_in_later_parquet_files_and_reach_the_target(
    tmp_path: Path, s3_settings: S3Settings, s3_bucket: str
) -> None:
    store = S3Store(s3_bucket, "dms", s3_settings)
    o = {"data_format": "parquet"}
    store.put("dbo/acct/LOAD00000001.parquet", _parquet(LOAD, o, op=False))
    store.put("dbo/acct/20240131-2359000000.parquet", _parquet(CDC[:2], o, op=True))

    def with_region(rows: list[Row], regions: list[str | None]) -> bytes:
        # After ALTER TABLE ... ADD region varchar, score int at the source: DMS writes the new columns.
        table = pq.read_table(io.BytesIO(_parquet(rows, o, op=True)))
        table = table.append_column("region", pa.array(regions, pa.string()))
        table = table.append_column("score", pa.array([len(r or "") for r in regions], pa.int32()))
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()

    store.put("dbo/acct/20240201-1000000000.parquet", with_region(CDC[2:], [None, "north"]))
    update_3: list[Row] = [("U", "2024-02-02 00:00:00.000000", ("3", "three", "30.50", None))]
    store.put("dbo/acct/20240202-0000000000.parquet", with_region(update_3, ["south"]))
    con = replicate(store, DmsOptions(data_format="parquet"), tmp_path, {T: SCHEMA})
    columns = [r[0] for r in con.execute("DESCRIBE dbo.acct").fetchall()]
    assert columns[:6] == ["id", "name", "amount", "opened", "region", "score"]
    got = con.execute("SELECT id, name, region, score FROM dbo.acct ORDER BY id").fetchall()
    assert got == [(1, "uno", None, None), (3, "three", "south", 5), (4, TRICKY, "north", 5)]
