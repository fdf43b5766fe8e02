"""Source column names that collide with the replicator's own columns, or that no warehouse accepts.

A DMS file naming a column ``_op``/``_seq`` (the staged file's own columns) or holding a NUL byte in a name
is rejected before anything of it is staged: the file is quarantined with the reason, counted in
``replicator_quarantined_total``, and its table stops (``problems()``) while the other tables go on. A schema
file declaring such a column is a configuration error at start (exit code 2).
"""

from __future__ import annotations

import io
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replicator import cli
from replicator.model import Column, TableId, TableSchema
from replicator.obs import metrics
from replicator.sources.dms.source import DmsOptions, DmsSource
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from tests.helpers.dms import pipeline_round, put

T = TableId("dbo", "t")
U = TableId("dbo", "u")
SCHEMAS = {
    T: TableSchema(T, (Column.of("id", "bigint", nullable=False), Column.of("name", "text")), ("id",)),
    U: TableSchema(U, (Column.of("k", "bigint", nullable=False),), ("k",)),
}
C1, C2, C3 = "20240101-0000000000", "20240101-0100000000", "20240101-0200000000"
HEADER = DmsOptions(add_column_name=True)


def _parquet(columns: dict[str, list[object]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def _quarantined(reason: str) -> float:
    value: float = metrics.QUARANTINED.labels(table="dbo.t", reason=reason)._value.get()
    return value


def _target(tmp_path: Path, table: str, column: str) -> list[int]:
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        return [r[0] for r in con.execute(f"SELECT {column} FROM {table} ORDER BY 1").fetchall()]


def _feed(tmp_path: Path, bad: tuple[str, bytes], *, parquet: bool = False) -> LocalStore:
    """dbo.t: a good file, the bad one, a good one; dbo.u: one file."""
    data = LocalStore(tmp_path / "dms")
    if parquet:
        put(data, T, f"{C1}.parquet", _parquet({"Op": ["I"], "id": [1], "name": ["one"]}))
        put(data, T, f"{C3}.parquet", _parquet({"Op": ["I"], "id": [3], "name": ["three"]}))
    else:
        put(data, T, f"{C1}.csv", "Op,id,name\nI,1,one\n")
        put(data, T, f"{C3}.csv", "Op,id,name\nI,3,three\n")
    put(data, T, bad[0], bad[1])
    put(data, U, f"{C1}.csv", "Op,k\nI,10\n")
    return data


def _assert_stopped_before_staging(tmp_path: Path, source: DmsSource, bad_name: str, before: float) -> None:
    """What the operator sees: the stop with its reason, one quarantine note and count; nothing of the bad
    file staged or applied (no batch left failing its merge), and the other table replicated."""
    [problem] = source.problems()
    assert problem["table"] == "dbo.t" and problem["reason"] == "bad_column_name"
    assert bad_name in str(problem["source"])
    assert _quarantined("bad_column_name") == before + 1
    [note] = Quarantine(LocalStore(tmp_path / "staging")).items()
    assert note["reason"] == "bad_column_name" and bad_name in str(note["source"])
    staging = LocalStore(tmp_path / "staging")
    assert list(Stager(staging, Quarantine(staging)).pending(T)) == []  # every staged batch merged
    assert _target(tmp_path, "dbo.t", "id") == [1]  # the file before the bad one, nothing after it
    assert _target(tmp_path, "dbo.u", "k") == [10]


@pytest.mark.parametrize("column", ["_op", "_seq", "_POS", "_replicator_rn"])
def test_a_csv_header_naming_a_replicator_column_stops_only_its_table_before_staging(
    tmp_path: Path, column: str
) -> None:
    data = _feed(tmp_path, (f"{C2}.csv", f"Op,id,name,{column}\nI,2,two,x\n".encode()))
    before = _quarantined("bad_column_name")
    source = pipeline_round(data, SCHEMAS, tmp_path, HEADER)
    _assert_stopped_before_staging(tmp_path, source, f"{C2}.csv", before)
    assert column in str(source.problems()[0]["detail"]) and "reserved" in str(source.problems()[0]["detail"])
    # The way out: the file is replaced (the column renamed at the source) and the operator retries.
    put(data, T, f"{C2}.csv", "Op,id,name,extra\nI,2,two,x\n")
    source.resume(T, "retry")
    assert pipeline_round(data, SCHEMAS, tmp_path, HEADER).problems() == []
    assert _target(tmp_path, "dbo.t", "id") == [1, 2, 3]


@pytest.mark.parametrize("column", ["_seq", "_Commit_Time"])
def test_a_parquet_file_naming_a_replicator_column_stops_only_its_table_before_staging(
    tmp_path: Path, column: str
) -> None:
    bad = _parquet({"Op": ["I"], "id": [2], "name": ["two"], column: [5]})
    data = _feed(tmp_path, (f"{C2}.parquet", bad), parquet=True)
    before = _quarantined("bad_column_name")
    source = pipeline_round(data, SCHEMAS, tmp_path, HEADER)  # the header setting is for dbo.u's CSV
    _assert_stopped_before_staging(tmp_path, source, f"{C2}.parquet", before)
    assert column in str(source.problems()[0]["detail"])


@pytest.mark.parametrize("parquet", [False, True], ids=["csv", "parquet"])
def test_a_column_name_with_a_nul_byte_is_rejected_before_it_is_staged(tmp_path: Path, parquet: bool) -> None:
    if parquet:
        bad = (f"{C2}.parquet", _parquet({"Op": ["I"], "id": [2], "name": ["two"], "a\x00b": ["x"]}))
    else:
        bad = (f"{C2}.csv", b"Op,id,name,a\x00b\nI,2,two,x\n")
    data = _feed(tmp_path, bad, parquet=parquet)
    before = _quarantined("bad_column_name")
    source = pipeline_round(data, SCHEMAS, tmp_path, HEADER)
    _assert_stopped_before_staging(tmp_path, source, bad[0], before)
    assert "NUL" in str(source.problems()[0]["detail"])


def test_with_the_quarantine_policy_a_file_with_a_reserved_column_is_set_aside_and_the_table_goes_on(
    tmp_path: Path,
) -> None:
    data = _feed(tmp_path, (f"{C2}.csv", b"Op,id,name,_op\nI,2,two,x\n"))
    before = _quarantined("bad_column_name")
    options = DmsOptions(add_column_name=True, table_policies={T: "quarantine"})
    assert pipeline_round(data, SCHEMAS, tmp_path, options).problems() == []
    assert _target(tmp_path, "dbo.t", "id") == [1, 3]
    assert _quarantined("bad_column_name") == before + 1


def _toml(columns: str, *, name: str = "t", extra: str = "") -> str:
    head = f'schema = "dbo"\nname = "{name}"\nprimary_key = ["id"]\n{extra}'
    return f'{head}[columns]\nid = "bigint"\n{columns}'


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (_toml('_op = "text"'), "_op"),
        (_toml('_SEQ = "text"'), "_SEQ"),
        (_toml('"a\\u0000b" = "text"'), "NUL"),
        (_toml("", name="t\\u0000"), "NUL"),
        (_toml('ID = "text"'), "case"),
        (_toml('_deleted = "boolean"', extra='deletes = "soft"\n'), "_deleted"),
    ],
    ids=["metadata name", "metadata name in capitals", "NUL in a column", "NUL in the table", "case twin",
         "soft-delete column"],
)  # fmt: skip
def test_a_schema_file_declaring_a_reserved_or_unusable_name_is_a_configuration_error_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, expected: str
) -> None:
    (tmp_path / "schemas" / "tables").mkdir(parents=True)
    (tmp_path / "schemas" / "tables" / "t.toml").write_text(toml)
    (tmp_path / "dms").mkdir()
    cfg = tmp_path / "r.toml"
    cfg.write_text(
        f'schemas = "{tmp_path / "schemas"}"\n[source]\npath = "{tmp_path / "dms"}"\n'
        f'[staging]\npath = "{tmp_path / "staging"}"\n'
        f'[warehouse]\nkind = "duckdb"\npath = "{tmp_path / "w.db"}"\n'
    )
    assert cli.main(["run", "-c", str(cfg), "--once"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "t.toml" in err and expected in err
