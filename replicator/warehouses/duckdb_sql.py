"""The DuckDB dialect: the embedded default target."""

from __future__ import annotations

from replicator.values.types import SCALAR_KINDS, TEXT_KINDS
from replicator.warehouses.dialect import Dialect

DUCKDB = Dialect(
    name="duckdb",
    types={
        "smallint": "SMALLINT",
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "numeric": "DECIMAL(38,10)",
        "real": "REAL",
        "double": "DOUBLE",
        "boolean": "BOOLEAN",
        # DuckDB ignores VARCHAR lengths and has no blank-padded CHAR: plain VARCHAR keeps the text as sent.
        "text": "VARCHAR",
        "varchar": "VARCHAR",
        "char": "VARCHAR",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ",
        "time": "TIME",
        "uuid": "UUID",
        "json": "JSON",
        "bytea": "BLOB",
        "timetz": "TIMETZ",  # reads PostgreSQL's text (offsets to the second) and writes it back the same
        "oid": "UINTEGER",
        # The rest keep PostgreSQL's text: INTERVAL does not read its mixed signs ("1 mon -2 days
        # +03:00:00"), BIT turns '' into '0', lists do not read "{...}", and DuckDB has no inet, money, xml,
        # geometric or range type (the inet extension is a download).
        **{k: "VARCHAR" for k in TEXT_KINDS - {"timetz"}},
        **{f"{k}[]": "VARCHAR" for k in SCALAR_KINDS},
    },
    sized={"numeric": "DECIMAL({precision},{scale})"},
    # No DECIMAL wider than 38 digits exists; 10 fractional digits is the usual compromise for money/ratios.
    unconstrained_numeric="DECIMAL(38,10)",
    text_array="VARCHAR[]",
    unchanged_test="list_contains({list}, {name})",
    # Temp tables vanish with the connection, so a crash cannot leave staging behind.
    staging_create="CREATE TEMP TABLE",
    # VARCHAR has no length here; numbers widen with ALTER COLUMN TYPE
    widen_kinds=frozenset({"smallint", "integer", "bigint", "numeric", "real", "double"}),
)
