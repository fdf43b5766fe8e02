"""The demo DMS feed: deterministic, in DMS's documented layout, consistent, and full of the hard cases."""

from __future__ import annotations

import csv
import itertools
import re
import time
import tomllib
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from replicator.demo.domain import TRICKY_NOTE
from replicator.demo.feed import FeedFormat, GenerationSummary, generate, generate_more
from tests.helpers.dms_reference import final_state, records, table_files

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("practices", "patients", "payment_plans", "payments", "insurance_claims")
SMALL = {"patients": 60, "cdc_files": 6, "changes_per_file": 60}
CDC_NAME = re.compile(r"^\d{8}-\d{6}\d{4}\.csv$")
LOAD_NAME = re.compile(r"^LOAD[0-9A-F]{8}\.csv$")
TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def _schema(table: str) -> tuple[list[str], list[int]]:
    doc = tomllib.loads((ROOT / "schemas" / "tables" / f"{table}.toml").read_text())
    columns = list(doc["columns"])
    return columns, [columns.index(k) for k in doc["primary_key"]]


KEYS = {t: _schema(t)[1] for t in TABLES}


def _column(table: str, name: str) -> int:
    return _schema(table)[0].index(name)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    folder = tmp_path_factory.mktemp("feed")
    return folder, generate(folder, **SMALL)


def test_the_demo_schemas_load_and_match_the_generator_columns() -> None:
    from replicator.demo.domain import COLUMNS
    from replicator.schema import load_tables

    tables = {t.name: s for t, s in load_tables(ROOT / "schemas").items()}
    assert set(tables) == set(TABLES)
    for name, schema in tables.items():
        assert schema.table.schema == "dbo"
        assert schema.column_names == COLUMNS[name]
        assert schema.primary_key == (COLUMNS[name][0],)


def test_the_same_seed_writes_byte_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    generate(tmp_path / "a", **SMALL)
    generate(tmp_path / "b", **SMALL)
    generate(tmp_path / "c", seed=8, **SMALL)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_every_file_is_named_and_shaped_as_dms_writes_it(feed: tuple[Path, GenerationSummary]) -> None:
    folder, summary = feed
    assert not [p for p in folder.rglob("*") if p.name.startswith(".")], "temp files left behind"
    for table in TABLES:
        width = len(_schema(table)[0])
        files = table_files(folder / "dbo" / table)
        assert files[0].name == "LOAD00000001.csv"
        for path in files:
            is_cdc = bool(CDC_NAME.match(path.name))
            assert is_cdc or LOAD_NAME.match(path.name), path
            flushed = datetime.strptime(path.name[:19], "%Y%m%d-%H%M%S%f") if is_cdc else None
            with path.open(encoding="utf-8", newline="") as f:
                rows = list(csv.reader(f))
            assert rows, path
            commits = []
            for fields in rows:
                assert len(fields) == width + 1 + is_cdc, (path, fields)
                if is_cdc:
                    assert fields[0] in ("I", "U", "D")
                commits.append(datetime.strptime(fields[int(is_cdc)], TS_FORMAT))
            assert commits == sorted(commits), f"{path}: commit times go backwards"
            if flushed is not None:
                assert commits[-1] <= flushed
    assert sum(1 for _ in folder.rglob("*.csv")) == len(summary.files)


def test_the_final_state_has_consistent_foreign_keys(feed: tuple[Path, GenerationSummary]) -> None:
    folder, _ = feed
    state = final_state(folder, KEYS)
    practices = {k[0] for k in state["practices"]}
    patients = {k[0]: r for k, r in state["patients"].items()}
    plans = {k[0]: r for k, r in state["payment_plans"].items()}
    assert all(r[_column("patients", "practice_id")] in practices for r in patients.values())
    for plan in plans.values():
        patient = patients[str(plan[_column("payment_plans", "patient_id")])]
        assert plan[_column("payment_plans", "practice_id")] == patient[_column("patients", "practice_id")]
    for table in ("payments", "insurance_claims"):
        for row in state[table].values():
            plan = plans[str(row[_column(table, "plan_id")])]
            assert row[_column(table, "patient_id")] == plan[_column("payment_plans", "patient_id")]


def test_inserts_hit_absent_keys_and_updates_and_deletes_hit_present_ones(
    feed: tuple[Path, GenerationSummary],
) -> None:
    folder, summary = feed
    state = final_state(folder, KEYS)
    for table in TABLES:
        present: set[str | None] = set()
        for path, op, _ts, values in records(folder / "dbo" / table):
            key = values[KEYS[table][0]]
            assert (op == "I") == (key not in present), (path, op, key)
            (present.discard if op == "D" else present.add)(key)
        ops = summary.rows[table]
        assert len(state[table]) == ops.get("load", 0) + ops.get("I", 0) - ops.get("D", 0)


def test_the_feed_holds_the_hard_cases(feed: tuple[Path, GenerationSummary]) -> None:
    folder, _ = feed
    rows = [(t, *r) for t in TABLES for r in records(folder / "dbo" / t)]
    values = [v for *_, vals in rows for v in vals]
    assert any(v is None for v in values), "NULLs"
    for needle in ("\n", "\r\n", ",", '"', "'", "🦷", "Ł", "ễ"):
        assert any(v and needle in v for v in values), f"a value containing {needle!r}"
    assert TRICKY_NOTE in values

    ops_per_key: dict[tuple[str, str, str | None], list[str]] = {}
    for table, path, op, _ts, vals in rows:
        ops_per_key.setdefault((table, path.name, vals[KEYS[table][0]]), []).append(op)
    assert any(ops.count("U") >= 2 for ops in ops_per_key.values()), "several updates of one row in one file"
    assert any("D" in ops and ops[ops.index("D") :].count("I") for ops in ops_per_key.values()), (
        "a key deleted then inserted again in one file"
    )
    history: dict[tuple[str, str | None], list[tuple[str, str]]] = {}
    for table, path, op, _ts, vals in rows:
        history.setdefault((table, vals[KEYS[table][0]]), []).append((path.name, op))
    assert any(
        any(a[1] == "D" and b[1] == "I" and a[0] != b[0] for a, b in itertools.pairwise(h))
        for h in history.values()
    ), "a key deleted in one file and inserted again in a later one"
    by_op = Counter((t, op) for t, _p, op, _ts, _v in rows)
    for op in ("I", "U", "D"):
        assert by_op[("payments", op)] > 0
    assert by_op[("patients", "D")] > 0
    deletes = [vals for t, _p, op, _ts, vals in rows if t == "payments" and op == "D"]
    assert all(v[_column("payments", "amount")] is not None for v in deletes), "D rows carry the old image"


def test_a_different_format_carries_the_same_data(
    tmp_path: Path, feed: tuple[Path, GenerationSummary]
) -> None:
    plain = FeedFormat(timestamp_column=None, add_column_name=True, load_file_rows=20)
    generate(tmp_path, fmt=plain, **SMALL)
    header = (
        (tmp_path / "dbo" / "payments" / table_files(tmp_path / "dbo" / "payments")[-1].name)
        .open()
        .readline()
    )
    assert header.strip() == "Op," + ",".join(_schema("payments")[0])
    assert (tmp_path / "dbo" / "payments" / "LOAD0000000A.csv").exists(), "hex load counter"
    expected = final_state(feed[0], KEYS)
    assert final_state(tmp_path, KEYS, timestamp=False, header=True) == expected


def test_generate_refuses_a_folder_that_already_holds_a_feed(feed: tuple[Path, GenerationSummary]) -> None:
    with pytest.raises(FileExistsError):
        generate(feed[0], **SMALL)


def test_generate_more_continues_the_feed_consistently(tmp_path: Path) -> None:
    first = generate(tmp_path, **SMALL)
    before = {t: [p.name for p in table_files(tmp_path / "dbo" / t)] for t in TABLES}
    max_key = {t: max(int(str(v[KEYS[t][0]])) for *_, v in records(tmp_path / "dbo" / t)) for t in TABLES}
    more = generate_more(tmp_path, files=3, changes_per_file=60)
    assert more.files and all(CDC_NAME.match(p.name) for p in more.files)
    assert more.first_commit is not None and more.first_commit > first.clock
    assert more.clock > first.clock
    for table in TABLES:
        names = [p.name for p in table_files(tmp_path / "dbo" / table)]
        assert names[: len(before[table])] == before[table], "new files sort after the existing ones"
        present: set[str | None] = set()
        deleted: set[str | None] = set()
        for path, op, _ts, vals in records(tmp_path / "dbo" / table):
            key = vals[KEYS[table][0]]
            assert (op == "I") == (key not in present), (path, op, key)
            (present.discard if op == "D" else present.add)(key)
            if op == "D":
                deleted.add(key)
            elif op == "I" and path.name not in before[table] and int(str(key)) <= max_key[table]:
                assert key in deleted, f"{table} {key}: a new row reused a key the feed already had"
    final_state(tmp_path, KEYS)  # still applies cleanly
    test_the_final_state_has_consistent_foreign_keys((tmp_path, more))

    twin = tmp_path.parent / "twin"
    generate(twin, **SMALL)
    generate_more(twin, files=3, changes_per_file=60)
    assert _files(twin) == _files(tmp_path)
    later = generate_more(tmp_path, files=1, changes_per_file=60)
    assert later.first_commit is not None and later.first_commit > more.clock


def test_the_default_demo_is_a_few_thousand_rows_generated_quickly(tmp_path: Path) -> None:
    started = time.perf_counter()
    summary = generate(tmp_path)
    elapsed = time.perf_counter() - started
    assert 2000 <= summary.total_rows <= 8000
    assert elapsed < 2.0, f"took {elapsed:.2f}s"


def test_generate_more_after_a_full_load_only_starts_after_the_load(tmp_path: Path) -> None:
    loaded = generate(tmp_path, patients=20, cdc_files=0)
    assert all(LOAD_NAME.match(p.name) for p in loaded.files)
    more = generate_more(tmp_path, files=2, changes_per_file=30)
    assert more.first_commit is not None and more.first_commit > loaded.clock
    final_state(tmp_path, KEYS)
