"""Column policies: drop, null and keyed-hash, applied before staging so a raw value never reaches the
staging store or the warehouse (the test scans every staged Parquet file and the target table)."""

from __future__ import annotations

import hashlib
import hmac
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import Batch, Column, Op, TableId, TableSchema
from replicator.pipeline import Pipeline
from replicator.schema.catalog import CatalogError, TableOptions, parse_options, parse_table
from replicator.schema.policies import ColumnPolicies, PolicyError, apply, target_schema
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine
from tests.helpers.scripted import ScriptedSource, change
from tests.helpers.warehouse import Target, query

KEY = b"a secret key from a file"
PATIENTS = TableSchema(
    TableId("dbo", "patients"),
    (
        Column.of("patient_id", "bigint", nullable=False),
        Column.of("last_name", "nvarchar(80)"),
        Column.of("email", "varchar(254)"),
        Column.of("phone", "varchar(20)"),
        Column.of("notes", "text"),
    ),
    ("patient_id",),
)
RULES = ColumnPolicies({"email": "hash", "phone": "null", "notes": "drop"}, KEY)
SECRETS = ["ng@example.org", "+44 20 7946 0018", "allergic to penicillin", "okafor@example.org"]


def digest(text: str) -> str:
    return hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest()


def test_policies_drop_null_and_hash_each_change_and_shape_the_schema() -> None:
    c = change(PATIENTS.table, Op.UPDATE, "1", "Ng", "ng@example.org", "+44", "notes")
    out = apply(Batch(PATIENTS.table, PATIENTS, [c]), RULES)
    assert out.schema == target_schema(PATIENTS, RULES)
    assert [str(col.type) for col in out.schema.columns] == [
        "bigint",
        "varchar(80)",
        "varchar(64)",
        "varchar(20)",
    ]
    assert out.changes[0].values == ("1", "Ng", digest("ng@example.org"), None)
    assert "key=***" in repr(RULES) and KEY.decode() not in repr(RULES)


def test_a_hash_without_a_key_or_a_dropped_key_column_is_refused() -> None:
    with pytest.raises(PolicyError, match="no key"):
        ColumnPolicies({"email": "hash"}).check(PATIENTS)
    with pytest.raises(PolicyError, match="key column patient_id can only be hashed"):
        ColumnPolicies({"patient_id": "drop"}, KEY).check(PATIENTS)


def test_table_toml_options_are_parsed_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        'schema = "dbo"\nname = "p"\nprimary_key = ["id"]\ndeletes = "soft"\n'
        '[columns]\nid = "bigint not null"\nemail = "text"\n[policies]\nemail = "hash"\n'
        '[redshift]\ndistkey = "id"\nsortkey = ["id"]\nencode = { email = "ZSTD" }\n'
    )
    opts = parse_options(path, parse_table(path))
    assert (opts.soft_delete, opts.policies, opts.redshift.distkey, opts.redshift.encode) == (
        True, (("email", "hash"),), "id", (("email", "zstd"),)
    )  # fmt: skip
    path.write_text(path.read_text().replace('email = "hash"', 'emial = "hash"'))
    with pytest.raises(CatalogError, match="emial"):
        parse_options(path, parse_table(path))


def test_a_hashed_column_never_appears_in_clear_in_staged_parquet_or_the_target(
    target: Target,
    tmp_path: Path,
) -> None:
    wh = target.open()
    wh.configure({PATIENTS.table: TableOptions(policies=tuple(RULES.rules.items()))})
    store = LocalStore(tmp_path / "staging")
    stager = Stager(store, Quarantine(store), {PATIENTS.table: RULES})
    source = ScriptedSource([PATIENTS])
    pipeline = Pipeline(
        source=source, stager=stager, warehouse=wh, schemas={PATIENTS.table: PATIENTS},
        batch=BatchConfig(), settings=PipelineConfig(poll_interval_seconds=0),
    )  # fmt: skip
    pipeline.start()
    p = PATIENTS.table
    source.script = [
        change(p, Op.INSERT, "1", "Ng", SECRETS[0], SECRETS[1], SECRETS[2]),
        change(p, Op.INSERT, "2", "Okafor", SECRETS[3], None, None),
        change(p, Op.DELETE, "2", "Okafor", SECRETS[3], None, None),
    ]
    pipeline.capture(threading.Event())
    staged = [f for f in (tmp_path / "staging").rglob("*") if f.is_file()]
    assert any(f.suffix == ".parquet" for f in staged)
    for f in staged:  # the raw bytes, whatever the encoding, and every decoded value
        raw = f.read_bytes()
        assert not any(s.encode() in raw for s in SECRETS), f
        if f.suffix == ".parquet":
            assert not any(s in str(pq.read_table(f).to_pylist()) for s in SECRETS)
            assert "notes" not in pq.read_schema(f).names
    pipeline.merge_all()
    assert pipeline.errors == {}
    everything = query(wh, 'SELECT * FROM "dbo"."patients"')
    assert everything == [(1, "Ng", digest(SECRETS[0]), None)]
    assert not any(s in str(everything) for s in SECRETS)
    wh.close()
