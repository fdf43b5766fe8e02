"""Bad DMS input, kind by kind: each ends in a quarantine record, a metric increment and the table's policy.

With the default ``stop`` policy the table stops at the bad row or file (``problems()`` says why) while the
other table keeps flowing; the operator then fixes the file and retries, or skips the bad part, and every
good row arrives. With ``quarantine`` the bad part is set aside and the table goes on at once.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replicator.config import BatchConfig
from replicator.model import Change, Column, TableId, TableSchema
from replicator.obs import metrics
from replicator.sources.dms.source import DmsOptions, DmsSource
from replicator.storage import LocalStore, Quarantine
from tests.helpers.dms import pipeline_round, put
from tests.helpers.dms_chunks import expand

T = TableId("dbo", "t")
U = TableId("dbo", "u")
SCHEMAS = {
    T: TableSchema(T, (Column.of("id", "bigint", nullable=False), Column.of("name", "text")), ("id",)),
    U: TableSchema(U, (Column.of("k", "bigint", nullable=False),), ("k",)),
}
C1, C2, C3 = "20240101-0000000000", "20240101-0100000000", "20240101-0200000000"
GOOD2 = b"I,2,two\nI,3,three\n"


def _parquet(rows: list[tuple[str, int, str]]) -> bytes:
    sink = io.BytesIO()
    table = pa.table({"Op": [r[0] for r in rows], "id": [r[1] for r in rows], "name": [r[2] for r in rows]})
    pq.write_table(table, sink)
    return sink.getvalue()


PARQUET2 = _parquet([("I", 2, "two"), ("I", 3, "three")])


@dataclass(frozen=True)
class Kind:
    reason: str
    name: str  # the bad file's name below dbo/t/
    data: bytes
    fix: bytes | None = None  # the operator replaces the file and retries; None: the operator skips
    options: DmsOptions = field(default_factory=DmsOptions)


KINDS = {
    "truncated gzip": Kind(
        "bad_compression", f"{C2}.csv.gz", gzip.compress(GOOD2)[:-12], gzip.compress(GOOD2)
    ),
    "corrupt gzip": Kind("bad_compression", f"{C2}.csv.gz", b"\x1f\x8b\x08\x00garbage", gzip.compress(GOOD2)),
    "corrupt parquet": Kind("bad_parquet", f"{C2}.parquet", b"PAR1 not really PAR1", PARQUET2),
    "truncated parquet": Kind("bad_parquet", f"{C2}.parquet", PARQUET2[:-30], PARQUET2),
    "wrong column count": Kind("column_count", f"{C2}.csv", b"I,2,two\nI,9\nI,3,three\n"),
    "unknown op": Kind("unknown_op", f"{C2}.csv", b"I,2,two\nX,9,nine\nI,3,three\n"),
    "unknown op in parquet": Kind(
        "unknown_op", f"{C2}.parquet", _parquet([("I", 2, "two"), ("Z", 9, "nine"), ("I", 3, "three")])
    ),
    "non-UTF-8 byte": Kind("invalid_utf8", f"{C2}.csv", b"I,2,two\nI,9,caf\xe9\nI,3,three\n"),
    "stray quote": Kind("csv_syntax", f"{C2}.csv", b'I,2,two\nI,9,"bad"quote\nI,3,three\n'),
    "bad timestamp": Kind(
        "bad_timestamp",
        f"{C2}.csv",
        b"I,2024-01-01 01:00:00,2,two\nI,yesterday,9,x\nI,2024-01-01 01:00:01,3,three\n",
        options=DmsOptions(timestamp_column_name="ts"),
    ),
    "empty file": Kind("empty_file", f"{C2}.csv", b"", GOOD2),
    "header that does not match": Kind(
        "bad_header",
        f"{C2}.csv",
        b"Op,name\nI,two\n",
        b"Op,id,name\nI,2,two\nI,3,three\n",
        options=DmsOptions(add_column_name=True),
    ),
}


def ids(changes: list[Change], table: TableId = T) -> list[int]:
    return [int(c.values[0] or 0) for c in changes if isinstance(c, Change) and c.table == table]


def quarantined(table: str, reason: str) -> float:
    value: float = metrics.QUARANTINED.labels(table=table, reason=reason)._value.get()
    return value


def first_file(kind: Kind) -> bytes:
    ts = kind.options.timestamp_column_name
    header = b"Op,id,name\n" if kind.options.add_column_name else b""
    return header + (b"I,2024-01-01 00:00:00,1,one\n" if ts else b"I,1,one\n")


def last_file(kind: Kind) -> bytes:
    ts = kind.options.timestamp_column_name
    header = b"Op,id,name\n" if kind.options.add_column_name else b""
    return header + (b"I,2024-01-01 02:00:00,4,four\n" if ts else b"I,4,four\n")


def _kind_feed(tmp_path: Path, kind: Kind) -> tuple[LocalStore, LocalStore]:
    """(DMS output store, state store) with three files of T: a good one, the bad one, a good one."""
    data, state = LocalStore(tmp_path / "dms"), LocalStore(tmp_path / "staging")
    put(data, T, f"{C1}.csv", first_file(kind))
    put(data, T, kind.name, kind.data)
    put(data, T, f"{C3}.csv", last_file(kind))
    return data, state


@pytest.mark.parametrize("name", list(KINDS))
def test_bad_input_stops_only_its_table_and_after_the_operator_acts_every_good_row_is_there(
    name: str, tmp_path: Path
) -> None:
    kind = KINDS[name]
    data, state = _kind_feed(tmp_path, kind)
    opts = kind.options
    for name_, k in ((C1, b"10"), (C2, b"11")):  # the other table's files, in the same settings
        header = b"Op,k\n" if opts.add_column_name else b""
        put(
            data,
            U,
            f"{name_}.csv",
            header + b"I," + (b"2024-01-01 00:00:00," if opts.timestamp_column_name else b"") + k + b"\n",
        )
    before = quarantined("dbo.t", kind.reason)
    src = DmsSource(data, SCHEMAS, state=state, quarantine=Quarantine(state), options=kind.options)
    got = expand(src.read())
    assert ids(got, U) == [10, 11]  # the other table is unaffected
    assert 4 not in ids(got)  # nothing after the bad part is applied
    [problem] = src.problems()
    assert (
        problem["table"] == "dbo.t"
        and problem["reason"] == kind.reason
        and kind.name in str(problem["source"])
    )
    assert quarantined("dbo.t", kind.reason) == before + 1
    [note] = Quarantine(state).items()
    assert (
        note["reason"] == kind.reason and kind.name in str(note["source"]) and "dbo.t" in str(note["detail"])
    )
    mine = [c for c in got if isinstance(c, Change) and c.table == T]
    src.ack({T: mine[-1].position})
    # A restart keeps the table stopped: only the operator's decision moves it.
    src = DmsSource(data, SCHEMAS, state=state, quarantine=Quarantine(state), options=kind.options)
    assert ids(expand(src.read())) == [] and src.problems()[0]["reason"] == kind.reason
    if kind.fix is not None:
        put(data, T, kind.name, kind.fix)
        src.resume(T, "retry")
    else:
        src.resume(T, "skip")
    after = expand(src.read())
    assert src.problems() == []
    assert sorted(set(ids(got) + ids(after))) == [1, 2, 3, 4]


@pytest.mark.parametrize("name", ["wrong column count", "corrupt gzip", "unknown op in parquet"])
def test_with_the_quarantine_policy_the_bad_part_is_set_aside_and_the_table_goes_on(
    name: str, tmp_path: Path
) -> None:
    kind = KINDS[name]
    data, state = _kind_feed(tmp_path, kind)
    before = quarantined("dbo.t", kind.reason)
    options = DmsOptions(table_policies={T: "quarantine"})
    got = expand(DmsSource(data, SCHEMAS, state=state, quarantine=Quarantine(state), options=options).read())
    expected = [1, 2, 3, 4] if kind.fix is None else [1, 4]  # a whole unreadable file waits in the quarantine
    assert ids(got) == expected
    assert quarantined("dbo.t", kind.reason) == before + 1


def test_files_of_an_unknown_table_folder_are_quarantined_and_known_tables_go_on(tmp_path: Path) -> None:
    data, state = LocalStore(tmp_path / "dms"), LocalStore(tmp_path / "staging")
    put(data, TableId("dbo", "stranger"), f"{C1}.csv", b"I,1\n")
    put(data, T, f"{C1}.csv", b"I,1,one\n")
    before = quarantined("dbo.stranger", "unknown_table")
    got = expand(DmsSource(data, SCHEMAS, state=state, quarantine=Quarantine(state)).read())
    assert ids(got) == [1]
    assert quarantined("dbo.stranger", "unknown_table") == before + 1


def test_a_late_file_stops_its_table_until_the_operator_skips_it(tmp_path: Path) -> None:
    data, state = LocalStore(tmp_path / "dms"), LocalStore(tmp_path / "staging")
    put(data, T, f"{C1}.csv", b"I,1,one\n")
    put(data, T, f"{C3}.csv", b"I,3,three\n")
    src = DmsSource(data, SCHEMAS, state=state, quarantine=Quarantine(state))
    assert ids(expand(src.read())) == [1, 3]
    before = quarantined("dbo.t", "out_of_order")
    put(data, T, f"{C2}.csv", b"I,2,late\n")
    put(data, T, "20240101-0300000000.csv", b"I,4,four\n")
    put(data, U, f"{C1}.csv", b"I,10\n")
    got = expand(src.read())
    assert ids(got) == [] and ids(got, U) == [10]
    assert (
        src.problems()[0]["reason"] == "out_of_order" and quarantined("dbo.t", "out_of_order") == before + 1
    )
    src.resume(T, "skip")  # the late file stays in the bucket and the quarantine for a manual replay
    assert ids(expand(src.read())) == [4]


def _pipeline_round(tmp_path: Path, options: DmsOptions, batch: BatchConfig | None = None) -> DmsSource:
    """One capture-and-merge round over the files in ``tmp_path/dms`` (a fresh process each time)."""
    return pipeline_round(LocalStore(tmp_path / "dms"), SCHEMAS, tmp_path, options, batch)


def _target(tmp_path: Path, table: str, column: str) -> list[int]:
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        return [r[0] for r in con.execute(f"SELECT {column} FROM {table} ORDER BY 1").fetchall()]


def _bad_value_feed(tmp_path: Path) -> None:
    data = LocalStore(tmp_path / "dms")
    put(data, T, f"{C1}.csv", b"I,1,one\n")
    put(data, T, f"{C2}.csv", b"I,2,two\nI,not-a-number,bad\nI,3,three\n")
    put(data, T, f"{C3}.csv", b"I,4,four\n")
    put(data, U, f"{C1}.csv", b"I,10\n")


@pytest.mark.parametrize("max_rows", [100_000, 2])
def test_a_value_that_does_not_parse_stops_its_table_until_the_operator_skips_the_row(
    tmp_path: Path, max_rows: int
) -> None:
    """Default policy ``stop``: nothing of the batch holding the bad value is staged or acknowledged, the
    reason shows with the source's other stops, and after ``skip`` every other row arrives."""
    _bad_value_feed(tmp_path)
    before = quarantined("dbo.t", "type_mismatch")
    batch = BatchConfig(max_rows=max_rows)
    source = _pipeline_round(tmp_path, DmsOptions(), batch)
    [problem] = source.problems()
    assert problem["table"] == "dbo.t" and problem["reason"] == "type_mismatch"
    assert problem["file"] == f"2/{C2}.csv" and problem["row"] == 2 and "not-a-number" in problem["detail"]
    assert quarantined("dbo.t", "type_mismatch") == before + 1
    assert _target(tmp_path, "dbo.u", "k") == [10]  # the other table is unaffected
    # Batches of 2 rows: the one before the bad batch (ids 1, 2) is applied; one batch holding all: nothing.
    assert _target(tmp_path, "dbo.t", "id") == ([1, 2] if max_rows == 2 else [])
    # A restart keeps the table stopped; only the operator's decision moves it.
    assert _pipeline_round(tmp_path, DmsOptions(), batch).problems()[0]["reason"] == "type_mismatch"
    assert _target(tmp_path, "dbo.t", "id") == ([1, 2] if max_rows == 2 else [])
    state = LocalStore(tmp_path / "staging")
    DmsSource(LocalStore(tmp_path / "dms"), SCHEMAS, state=state, quarantine=Quarantine(state)).resume(
        T, "skip"
    )
    assert _pipeline_round(tmp_path, DmsOptions(), batch).problems() == []
    assert _target(tmp_path, "dbo.t", "id") == [1, 2, 3, 4]
    notes = [n for n in Quarantine(state).items() if n["reason"] == "type_mismatch"]
    assert len(notes) == 1 and f"2/{C2}.csv 0000000002" in str(notes[0]["source"])


def test_a_value_that_does_not_parse_is_retried_after_the_operator_fixes_the_file(tmp_path: Path) -> None:
    _bad_value_feed(tmp_path)
    assert _pipeline_round(tmp_path, DmsOptions()).problems()[0]["reason"] == "type_mismatch"
    put(LocalStore(tmp_path / "dms"), T, f"{C2}.csv", b"I,2,two\nI,9,nine\nI,3,three\n")
    state = LocalStore(tmp_path / "staging")
    DmsSource(LocalStore(tmp_path / "dms"), SCHEMAS, state=state, quarantine=Quarantine(state)).resume(
        T, "retry"
    )
    assert _pipeline_round(tmp_path, DmsOptions()).problems() == []
    assert _target(tmp_path, "dbo.t", "id") == [1, 2, 3, 4, 9]


def test_with_the_quarantine_policy_a_value_that_does_not_parse_is_set_aside_and_the_rest_applied(
    tmp_path: Path,
) -> None:
    _bad_value_feed(tmp_path)
    before = quarantined("dbo.t", "type_mismatch")
    source = _pipeline_round(tmp_path, DmsOptions(table_policies={T: "quarantine"}))
    assert source.problems() == []
    assert _target(tmp_path, "dbo.t", "id") == [1, 2, 3, 4]
    assert _target(tmp_path, "dbo.u", "k") == [10]
    assert quarantined("dbo.t", "type_mismatch") == before + 1
    [note] = Quarantine(LocalStore(tmp_path / "staging")).items()
    assert f"2/{C2}.csv 0000000002" in str(note["source"])  # file and row, through the position


def _null_key_feed(tmp_path: Path) -> None:
    data = LocalStore(tmp_path / "dms")
    put(data, T, f"{C1}.csv", b"I,1,one\n")
    put(data, T, f"{C2}.csv", b"I,2,two\nI,NULL,no key\nI,3,three\n")
    put(data, T, f"{C3}.csv", b"I,4,four\n")
    put(data, U, f"{C1}.csv", b"I,10\n")


def test_a_null_primary_key_stops_its_table_at_staging_and_skip_lets_every_good_row_through(
    tmp_path: Path,
) -> None:
    """Issue 13 defect 5: a NULL key used to pass staging and then fail every merge of the table forever."""
    _null_key_feed(tmp_path)
    before = quarantined("dbo.t", "null_key")
    [problem] = _pipeline_round(tmp_path, DmsOptions()).problems()
    assert (
        problem["reason"] == "null_key"
        and problem["row"] == 2
        and "primary key column id" in problem["detail"]
    )
    assert quarantined("dbo.t", "null_key") == before + 1
    assert _target(tmp_path, "dbo.u", "k") == [10]
    state = LocalStore(tmp_path / "staging")
    DmsSource(LocalStore(tmp_path / "dms"), SCHEMAS, state=state, quarantine=Quarantine(state)).resume(
        T, "skip"
    )
    assert _pipeline_round(tmp_path, DmsOptions()).problems() == []
    assert _target(tmp_path, "dbo.t", "id") == [1, 2, 3, 4]
    assert not list(LocalStore(tmp_path / "staging").list("batches/"))  # nothing left that cannot merge


def test_with_the_quarantine_policy_a_null_primary_key_is_set_aside_and_the_rest_applied(
    tmp_path: Path,
) -> None:
    _null_key_feed(tmp_path)
    source = _pipeline_round(tmp_path, DmsOptions(table_policies={T: "quarantine"}))
    assert source.problems() == []
    assert _target(tmp_path, "dbo.t", "id") == [1, 2, 3, 4]
    [entry] = Quarantine(LocalStore(tmp_path / "staging")).entries()
    assert entry["reason"] == "null_key" and entry["data"] == {"op": "I", "values": [None, "no key"]}
