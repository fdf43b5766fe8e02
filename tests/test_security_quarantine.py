"""Issue 17, point 5: the quarantine never holds a policy column in clear.

Rows rejected while a DMS file is parsed (wrong field count, bad Op, invalid UTF-8, CSV syntax, bad
timestamp; in CSV, gzip CSV and Parquet files alike) were stored raw, before the column policies run. Now
each is located in its source object (the object is already in the customer's bucket): the row number and
its byte range (``byte_range``: offset and length, of the decompressed bytes for a gzip file) or, for
Parquet, where a row has no byte range of its own, its row group and index in it (``parquet_row``). On a
table with column policies no byte of the row is kept: only its fields with the policies applied (dropped
columns absent, nulled ones null, hashed ones their HMAC), and no fields at all when the row does not split
into the table's columns. Values that fail to parse later (at staging) are stored after the policies, as
before. Every object under staging, Parquet contents included, is scanned for the clear values.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from replicator.model import Column, TableId, TableSchema
from replicator.schema import ColumnPolicies
from replicator.sources.dms import DmsOptions, DmsSource
from replicator.storage import LocalStore, Quarantine
from tests.helpers.daemon import Feed, daemon_config
from tests.helpers.dms_chunks import expand
from tests.helpers.support import ROOT, run_cli

EMAIL, PHONE, LAST = "phi.leak@mail.example", "(555) 123-4567", "Leakmore"
KEY = "k" * 32
TS = "2024-03-05 10:00:00.000000"
COLUMNS = (
    "patient_id", "practice_id", "first_name", "last_name", "date_of_birth", "email", "phone",
    "guardian_name", "is_active", "notes", "created_at", "updated_at",
)  # fmt: skip
POLICIES = '\n[policies]\nlast_name = "hash"\nemail = "drop"\nphone = "null"\n'
CSV_NAME, GZ_NAME = "20240305-1000000000.csv", "20240305-1000000001.csv.gz"
PARQUET_NAME = "20240305-1000000002.parquet"


def _values(pid: int, *, first: str = "Ann", last: str = LAST, dob: str = "1990-01-01") -> list[str | None]:
    return [str(pid), "1", first, last, dob, EMAIL, PHONE, None, "1", None, TS, TS]


def _row(
    op: str, pid: int, *, ts: str = TS, first: str = "Ann", last: str = LAST, dob: str = "1990-01-01"
) -> str:
    fields = [op, ts, *("NULL" if v is None else v for v in _values(pid, first=first, last=last, dob=dob))]
    return ",".join(fields)


def _hash(text: str) -> str:
    return hmac.new(KEY.encode(), text.encode(), hashlib.sha256).hexdigest()


# (reason, row text, the first name the row's fields hold when it splits into the table's columns, or None)
CSV_BAD = [
    ("column_count", f"I,{TS},901,1,Ann,{LAST},1990-01-01,{EMAIL},{PHONE},NULL,1", None),
    ("unknown_op", _row("X", 902), "Ann"),
    ("invalid_utf8", _row("I", 903, first="\udcff\udcfe"), "\\xff\\xfe"),  # splits: kept escaped
    ("invalid_utf8", f"I,{TS},904,\udcff,{LAST},{EMAIL}", None),  # does not split into the columns
    ("csv_syntax", _row("I", 905, last=f'"{LAST}"x'), None),
    ("bad_timestamp", _row("I", 906, ts="not-a-time"), "Ann"),
    ("unknown_op", _row("", 907, first='"Ann, Jr."'), "Ann, Jr."),  # an empty Op; a quoted comma
]
BAD_VALUE = _row("I", 908, dob="1990-13-45")  # parses as CSV; the date fails when staged
GZ_BAD = [("unknown_op", _row("Q", 911), "Ann"), ("column_count", f"I,{TS},912,{EMAIL}", None)]


def _encode(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def _parquet() -> bytes:
    """Four rows in two row groups: two good, then an Op ``X`` and a null Op (row group 1, rows 0 and 1)."""
    rows = [("I", 920), ("I", 921), ("X", 922), (None, 923)]
    cols: dict[str, Any] = {"Op": [op for op, _ in rows], "dms_commit_ts": [TS] * len(rows)}
    for i, name in enumerate(COLUMNS):
        cols[name] = [_values(pid)[i] for _, pid in rows]
    table = pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=2)
    return sink.getvalue()


def _clear_text(folder: Path) -> bytes:
    """Everything under ``folder`` as bytes, with each Parquet file's values decoded (its pages are
    compressed: a byte scan alone would miss a clear value in them)."""
    out = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        out.append(data)
        if data[:4] == b"PAR1":
            out.append(json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str).encode())
    return b"\n".join(out)


def _policy_feed(tmp_path: Path) -> tuple[Path, Feed]:
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    patients = schemas / "tables" / "patients.toml"
    patients.write_text(patients.read_text() + POLICIES)
    feed = Feed(tmp_path, seed=50, flushes=1)
    feed.release(1)
    folder = feed.live / "dbo" / "patients"
    (folder / CSV_NAME).write_bytes(_encode([r for _, r, _ in CSV_BAD] + [BAD_VALUE, _row("I", 909)]))
    gz_lines = [_row("I", 910), *(r for _, r, _ in GZ_BAD), _row("I", 913)]
    (folder / GZ_NAME).write_bytes(gzip.compress(_encode(gz_lines)))
    (folder / PARQUET_NAME).write_bytes(_parquet())
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)
    cfg.write_text(
        cfg.read_text()
        .replace(f'schemas = "{ROOT / "schemas"}"', f'schemas = "{schemas}"')
        .replace("[source.dms]\n", '[source.dms]\nbad_input_policy = "quarantine"\n')
    )
    return cfg, feed


def _check_fields(note: dict[str, Any], pid: int, first: str | None) -> None:
    """A policy table's note: no bytes, and the fields after the policies exactly when the row splits."""
    assert note["data_key"] is None and "not kept" in note["detail"], note
    if first is None:
        assert "fields" not in note, note
        return
    want = dict(zip(COLUMNS, _values(pid, first=first), strict=True))
    del want["email"]  # drop
    want["phone"] = None  # null
    want["last_name"] = _hash(LAST)  # hash
    assert note["fields"] == want, note


def test_no_bad_row_of_a_policy_table_reaches_the_quarantine_in_clear(tmp_path: Path) -> None:
    cfg, feed = _policy_feed(tmp_path)
    out = run_cli("run", "--once", "-c", str(cfg), env={"REPLICATOR__POLICIES__HMAC_KEY": KEY})
    assert out.returncode == 0, out.stderr[-3000:]

    folder = feed.live / "dbo" / "patients"
    notes = Quarantine(LocalStore(tmp_path / "stage")).items()
    by_place = {
        (str(n["source"]).rsplit("/", 1)[-1], n["row"]): n for n in notes if n["table"] == "dbo.patients"
    }
    # CSV and gzip CSV: each row by its byte range, which holds exactly the row in the (decompressed) file.
    for name, raw, bad, decompressed in (
        (CSV_NAME, (folder / CSV_NAME).read_bytes(), CSV_BAD, False),
        (GZ_NAME, gzip.decompress((folder / GZ_NAME).read_bytes()), GZ_BAD, True),
    ):
        first_row = 1 if name == CSV_NAME else 2
        for row, (reason, text, first) in enumerate(bad, start=first_row):
            note = by_place[(name, row)]
            assert note["reason"] == reason, note
            span = note["byte_range"]
            assert span["decompressed"] is decompressed, note
            offset, length = span["offset"], span["length"]
            assert raw[offset : offset + length] == text.encode("utf-8", "surrogateescape"), note
            assert f"bytes {offset}-{offset + length - 1}" in note["detail"], note  # what every listing shows
            _check_fields(note, int(text.split(",")[2]), first)
    # Parquet: a row group and the row's index in it.
    for row, pid in ((3, 922), (4, 923)):
        note = by_place[(PARQUET_NAME, row)]
        assert note["reason"] == "unknown_op" and "byte_range" not in note, note
        assert note["parquet_row"] == {"row_group": 1, "index": row - 3}, note
        assert f"row group 1, row {row - 3} in it" in note["detail"], note
        _check_fields(note, pid, "Ann")
    # The bad date: set aside at staging (a value of the wrong type), after the policies.
    staged = [n for n in notes if str(n["source"]).endswith(f"{CSV_NAME} 0000000008")]
    assert [n["reason"] for n in staged] == ["type_mismatch"], notes

    everything = _clear_text(tmp_path / "stage")
    for clear in (EMAIL, PHONE, LAST):
        assert clear.encode() not in everything, f"{clear!r} is in clear under staging"
        assert clear not in out.stderr, f"{clear!r} is in the log"
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        got = con.execute(
            'SELECT patient_id, last_name FROM "dbo"."patients" WHERE patient_id >= 900 ORDER BY 1'
        ).fetchall()
    finally:
        con.close()
    assert got == [(p, _hash(LAST)) for p in (909, 910, 913, 920, 921)]  # the good rows went on


def test_a_table_without_policies_keeps_its_bad_rows_for_the_operator(tmp_path: Path) -> None:
    feed = Feed(tmp_path, seed=51, flushes=1)
    feed.release(1)
    text = _encode([_row("I", 950), CSV_BAD[1][1]])
    (feed.live / "dbo" / "patients" / CSV_NAME).write_bytes(text)
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)
    cfg.write_text(
        cfg.read_text().replace("[source.dms]\n", '[source.dms]\nbad_input_policy = "quarantine"\n')
    )
    out = run_cli("run", "--once", "-c", str(cfg))
    assert out.returncode == 0, out.stderr[-3000:]
    [note] = Quarantine(LocalStore(tmp_path / "stage")).items()
    data = (tmp_path / "stage" / str(note["data_key"])).read_bytes()
    assert data.decode() == CSV_BAD[1][1]
    span: Any = note["byte_range"]
    assert note["row"] == 2 and text[span["offset"] : span["offset"] + span["length"]] == data, note
    assert "fields" not in note


T = TableId("dbo", "t")
U = TableId("sales", "orders")
TXN_SCHEMAS = {
    T: TableSchema(T, (Column.of("id", "bigint"), Column.of("name", "text")), ("id",)),
    U: TableSchema(U, (Column.of("order_id", "bigint"), Column.of("amount", "numeric(12,2)")), ("order_id",)),
}


def test_a_transaction_feed_keeps_no_clear_value_of_a_policy_table(tmp_path: Path) -> None:
    """PreserveTransactions: one file holds every table's rows. A bad row of the policy table keeps its
    fields after the policies; a row that cannot say its table might be one of its rows: no bytes kept."""
    data, state = LocalStore(tmp_path / "dms"), LocalStore(tmp_path / "staging")
    lines = [
        "I,t,dbo,1,one",
        f"X,t,dbo,2,{LAST}",  # unknown_op on dbo.t: fields after the policies
        f"I,t,dbo,3,{LAST}\udcff",  # invalid_utf8: names no table
        f'I,t,dbo,4,"{LAST}"x',  # csv_syntax: names no table
        f"{LAST}",  # fewer than 3 fields: names no table
        f"I,t,dbo,5,{LAST},extra",  # column_count on dbo.t: does not split into its columns
        "I,orders,sales,10,1.50",
    ]
    text = _encode(lines)
    data.put("cdc/CDC_TXN-20240101-0000000000-00001.csv", text)
    options = DmsOptions(preserve_transactions=True, cdc_path="cdc", bad_input_policy="quarantine")
    policies = {T: ColumnPolicies({"name": "hash"}, KEY.encode())}
    source = DmsSource(
        data, TXN_SCHEMAS, state=state, quarantine=Quarantine(state), options=options, policies=policies
    )
    got = expand(source.read())
    assert [(str(c.table), c.values) for c in got] == [
        ("dbo.t", ("1", "one")),
        ("sales.orders", ("10", "1.50")),
    ]

    notes = {n["row"]: n for n in Quarantine(state).items()}
    assert {r: n["reason"] for r, n in notes.items()} == {
        2: "unknown_op", 3: "invalid_utf8", 4: "csv_syntax", 5: "column_count", 6: "column_count",
    }  # fmt: skip
    for row, note in notes.items():
        span = note["byte_range"]
        assert text[span["offset"] : span["offset"] + span["length"]] == _encode([lines[row - 1]])[:-1], note
        assert note["data_key"] is None and "not kept" in note["detail"], note
    assert notes[2]["fields"] == {"id": "2", "name": _hash(LAST)}
    assert all("fields" not in notes[r] for r in (3, 4, 5, 6))
    assert LAST.encode() not in _clear_text(tmp_path / "staging")
