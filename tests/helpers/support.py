"""Helpers shared by the end-to-end and crash tests: run the real CLI, write configs, compare states."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import psycopg2

from replicator.model import TableSchema
from replicator.schema import load_tables
from replicator.sql import quote_ident, quote_table
from replicator.values import text_to_arrow
from tests.helpers.dms_reference import final_state

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = load_tables(ROOT / "schemas")
BY_NAME = {t.name: s for t, s in SCHEMAS.items()}


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m replicator ARGS`` in a child process, as an operator would run it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def write_config(
    path: Path,
    *,
    source: str,
    staging: str,
    warehouse: str = "duckdb",
    duckdb_path: str = "warehouse.duckdb",
    max_rows: int = 50_000,
    extra: str = "",
) -> Path:
    path.write_text(
        f"""schemas = "{ROOT / "schemas"}"
[source]
path = "{source}"
[source.dms]
timestamp_column_name = "dms_commit_ts"
[staging]
path = "{staging}"
[warehouse]
kind = "{warehouse}"
path = "{duckdb_path}"
[batch]
max_rows = {max_rows}
max_age_seconds = 0.5
[pipeline]
poll_interval_seconds = 0.2
[log]
level = "info"
format = "json"
{extra}"""
    )
    return path


def pg_env(dsn: str) -> dict[str, str]:
    """REPLICATOR__WAREHOUSE__* overrides pointing the postgres warehouse at ``dsn``."""
    parts = dict(p.split("=", 1) for p in dsn.split())
    return {
        "REPLICATOR__WAREHOUSE__KIND": "postgres",
        "REPLICATOR__WAREHOUSE__HOST": parts.get("host", "127.0.0.1"),
        "REPLICATOR__WAREHOUSE__PORT": parts.get("port", "5432"),
        "REPLICATOR__WAREHOUSE__USER": parts.get("user", "postgres"),
        "REPLICATOR__WAREHOUSE__DATABASE": parts["dbname"],
        "REPLICATOR__WAREHOUSE__SSLMODE": "disable",
    }


def _typed(schema: TableSchema, row: list[str | None]) -> tuple[Any, ...]:
    return tuple(text_to_arrow([v], c.type).to_pylist()[0] for c, v in zip(schema.columns, row, strict=True))


def expected_state(dms_folder: Path) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    """The final state the feed implies, from the independent reference reader, with typed values."""
    keys = {name: [s.column_names.index(k) for k in s.primary_key] for name, s in BY_NAME.items()}
    state = final_state(dms_folder, keys)
    out: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    for name, rows in state.items():
        schema = BY_NAME[name]
        out[name] = {}
        for row in rows.values():
            typed = _typed(schema, row)
            out[name][tuple(typed[i] for i in keys[name])] = typed
    return out


def _normalise(value: Any) -> Any:
    # DuckDB returns UUID objects, PostgreSQL may return memoryview for bytea and dicts for json.
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def duckdb_state(path: Path) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {
            name: _rows(schema, con.execute(_select(schema)).fetchall()) for name, schema in BY_NAME.items()
        }
    finally:
        con.close()


def postgres_state(dsn: str) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    conn = psycopg2.connect(dsn)
    try:
        out = {}
        with conn.cursor() as cur:
            for name, schema in BY_NAME.items():
                cur.execute(_select(schema))
                out[name] = _rows(schema, cur.fetchall())
        return out
    finally:
        conn.close()


def _select(schema: TableSchema) -> str:
    cols = ", ".join(quote_ident(c) for c in schema.column_names)
    return f"SELECT {cols} FROM {quote_table(schema.table)}"


def _rows(schema: TableSchema, rows: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    idx = [schema.column_names.index(k) for k in schema.primary_key]
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        norm = tuple(_normalise(v) for v in row)
        key = tuple(norm[i] for i in idx)
        assert key not in out, f"{schema.table}: duplicate key {key} in the target"
        out[key] = norm
    return out


def assert_same_state(actual: dict[str, dict[Any, Any]], expected: dict[str, dict[Any, Any]]) -> None:
    """Row-by-row comparison with a readable first difference per table."""
    assert set(actual) == set(expected)
    for table in sorted(expected):
        exp, act = expected[table], actual[table]
        missing = sorted(set(exp) - set(act), key=repr)[:3]
        extra = sorted(set(act) - set(exp), key=repr)[:3]
        assert not missing, f"{table}: {len(set(exp) - set(act))} rows missing, e.g. {missing}"
        assert not extra, f"{table}: {len(set(act) - set(exp))} unexpected rows, e.g. {extra}"
        for key, row in exp.items():
            assert act[key] == row, f"{table} {key}: expected {row}, got {act[key]}"
