"""Bad rows in long columns are found in bulk and exactly (issue 13, defect 7).

A long column (more than a few thousand values) is cast whole only when a sample of it casts; otherwise the
texts the sample shows to be of the wrong shape (a wrong null marker) are set aside by equality, then every
value's shape is checked, then what still does not cast is bisected. Each of those steps must find exactly
the values that do not parse, no more: these tests put bad values where each step has to catch them, and
compare with value-by-value parsing.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replicator.buffer import ChunkedChanges
from replicator.model import (
    COMMIT_TIME_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    Batch,
    ChangeChunk,
    Column,
    TableId,
    TableSchema,
)
from replicator.schema import typed_column
from replicator.stage import Stager, batch_to_arrow
from replicator.storage import LocalStore, Quarantine
from replicator.values import parse_type, text_to_arrow

N = 10_000  # long enough to be sampled

GOOD = {"bigint": "17", "numeric(12,2)": "3.25", "date": "2024-05-01", "timestamp": "2024-05-01 12:34:56.5"}
# Right shape, but not a value: only a cast finds these.
SHAPED_BAD = {"bigint": "99999999999999999999", "numeric(12,2)": "12345678901.5", "date": "2024-02-30",
              "timestamp": "2024-05-01 25:00:00"}  # fmt: skip


def _one_by_one(values: list[str | None], kind: str) -> list[int]:
    """The rows whose value does not parse alone (each distinct value tried once)."""
    parses: dict[str | None, bool] = {}
    for v in set(values):
        try:
            text_to_arrow([v], parse_type(kind))
            parses[v] = True
        except ValueError:
            parses[v] = False
    return [i for i, v in enumerate(values) if not parses[v]]


def _column(kind: str, *, shaped: bool) -> list[str | None]:
    """Half the rows a wrong null marker; a few other bad texts placed off the sample's runs (between
    them) and on them; ``shaped``: a value of the right shape that does not cast; NULLs."""
    values: list[str | None] = [("NULL" if i % 2 else GOOD[kind]) for i in range(N)]
    values[N // 16 + 300] = "n/a"  # between two sample runs: the marker search cannot see it
    values[N // 16 + 301] = "garbage"
    values[5] = "-"  # inside the first run, alone of its kind
    if shaped:
        values[N // 2 + 400] = SHAPED_BAD[kind]
    values[N // 2 + 402] = None
    return values


@pytest.mark.parametrize("kind", sorted(GOOD))
@pytest.mark.parametrize("suspect", [False, True])
@pytest.mark.parametrize("shaped", [False, True])
def test_a_long_column_with_a_marker_and_other_bad_values_sets_aside_exactly_the_bad_ones(
    kind: str, suspect: bool, shaped: bool
) -> None:
    values = _column(kind, shaped=shaped)
    typed, bad = typed_column(pa.array(values, pa.string()), parse_type(kind), suspect=suspect)
    assert bad == _one_by_one(values, kind)
    out = set(bad)
    good = [None if i in out else v for i, v in enumerate(values)]
    assert typed.equals(text_to_arrow(good, parse_type(kind)))
    _, mask = typed_column(pa.array(values, pa.string()), parse_type(kind), suspect=suspect, as_mask=True)
    assert mask is not None and mask.to_pylist() == [i in out for i in range(N)]


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_a_long_column_of_only_the_marker_or_clean_gives_what_parsing_each_value_gives(kind: str) -> None:
    t = parse_type(kind)
    marker_only = pa.array(["NULL"] * N, pa.string())
    typed, bad = typed_column(marker_only, t)
    assert bad == list(range(N)) and typed.null_count == N
    clean = pa.array([GOOD[kind], None] * (N // 2), pa.string())
    typed, mask = typed_column(clean, t, suspect=True, as_mask=True)
    assert mask is None and typed.equals(text_to_arrow(clean, t))


T = TableId("bench", "claims")
SCHEMA = TableSchema(
    T,
    (
        Column("id", parse_type("bigint"), False),
        Column("amount", parse_type("numeric(12,2)")),
        Column("filed_on", parse_type("date")),
        Column("note", parse_type("text")),
    ),
    ("id",),
)


def _chunk_batch(rows: list[tuple[str | None, ...]]) -> Batch:
    n = len(rows)
    columns = list(zip(*rows, strict=True))
    data = {c.name: pa.array(list(v), pa.string()) for c, v in zip(SCHEMA.columns, columns, strict=True)}
    data[OP_COLUMN] = pa.array(["I"] * n)
    data[POSITION_COLUMN] = pa.array([f"{i:08d}" for i in range(n)])
    data[COMMIT_TIME_COLUMN] = pa.nulls(n, pa.timestamp("us", tz="UTC"))
    return Batch(T, SCHEMA, ChunkedChanges([ChangeChunk(T, SCHEMA, pa.table(data))]))


def test_a_columnar_batch_quarantines_each_bad_row_once_with_its_first_problem(tmp_path: Path) -> None:
    rows: list[tuple[str | None, ...]] = []
    for i in range(N):
        amount = "NULL" if i % 3 == 0 else "1.50"
        filed = "NULL" if i % 2 == 0 else "2024-05-01"
        key = None if i % 7 == 0 else str(i)
        rows.append((key, amount, filed, f"x{i}" * (50 if i == 6 else 1)))
    table, rejected = batch_to_arrow(_chunk_batch(rows))
    expected = [i for i in range(N) if i % 3 == 0 or i % 2 == 0 or i % 7 == 0]
    set_aside = set(expected)
    assert [r.index for r in rejected] == expected
    assert table.column("id").to_pylist() == [i for i in range(N) if i not in set_aside]
    assert table.column("_seq").to_pylist() == list(range(table.num_rows))
    first = {r.index: r for r in rejected}
    assert (first[0].column, first[0].reason) == ("amount", "type_mismatch")
    assert first[0].detail == "column amount: 'NULL' is not a valid numeric(12,2)"
    assert (first[2].column, first[2].detail) == ("filed_on", "column filed_on: 'NULL' is not a valid date")
    assert (first[7].column, first[7].reason) == ("id", "null_key")
    assert first[7].detail == "primary key column id is null"
    assert rejected.bad_columns == {"amount", "filed_on"}
    # what the quarantine holds is the row's text
    assert rejected.data.column("values").to_pylist()[1] == dict(
        zip(SCHEMA.column_names, rows[2], strict=True)
    )
    store = LocalStore(tmp_path)
    manifest = Stager(store, Quarantine(store)).stage(_chunk_batch(rows), keep=lambda r: True)
    assert manifest.rows == N - len(expected)
    assert (
        pq.read_table(store.root / manifest.data_key).column("id").to_pylist()
        == table.column("id").to_pylist()
    )


def test_a_long_detail_is_cut_to_80_characters() -> None:
    rows: list[tuple[str | None, ...]] = [(str(i), "1.5", "2024-05-01", "n") for i in range(N)]
    rows[9] = ("9", "y" * 500, "2024-05-01", "n")
    rows[10] = ("10", "NULL", "2024-05-01", "n")
    _, rejected = batch_to_arrow(_chunk_batch(rows))
    assert [r.detail for r in rejected] == [
        f"column amount: '{'y' * 80}' is not a valid numeric(12,2)",
        "column amount: 'NULL' is not a valid numeric(12,2)",
    ]
