"""The PostgreSQL dialect (15+: MERGE)."""

from __future__ import annotations

from replicator.values.types import TEXT_KINDS
from replicator.warehouses.dialect import Dialect

_SCALARS = {
    "smallint": "smallint",
    "integer": "integer",
    "bigint": "bigint",
    "numeric": "numeric",
    "real": "real",
    "double": "double precision",
    "boolean": "boolean",
    "text": "text",
    "varchar": "varchar",
    # Unsized char would mean char(1) in PostgreSQL and truncate; text keeps whatever was sent.
    "char": "text",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
    "uuid": "uuid",
    "json": "jsonb",
    "bytea": "bytea",
    "oid": "oid",
    # PostgreSQL's own types read the text they wrote: the value comes back exactly.
    **{k: k for k in TEXT_KINDS},
    # Money's text depends on lc_monetary (on the source's and the target's session alike): text keeps what
    # the source wrote.
    "money": "text",
}
_SIZED = {
    "numeric": "numeric({precision},{scale})",
    "varchar": "varchar({length})",
    "char": "char({length})",
    "bit": "bit({length})",
    "varbit": "varbit({length})",
}

POSTGRES = Dialect(
    name="postgres",
    # Arrays are arrays of the element's type: every dimension and lower bound comes back as it was.
    types={**_SCALARS, **{f"{k}[]": f"{v}[]" for k, v in _SCALARS.items()}},
    sized={**_SIZED, **{f"{k}[]": f"{v}[]" for k, v in _SIZED.items()}},
    unconstrained_numeric="numeric",
    text_array="text[]",
    unchanged_test="{name} = ANY({list})",
    # Temp tables skip the WAL and ON COMMIT DROP removes them on commit and on rollback alike.
    staging_create="CREATE TEMP TABLE",
    # ALTER COLUMN TYPE rewrites the table when needed; every widening in schema.evolution is lossless
    widen_kinds=frozenset(
        {"smallint", "integer", "bigint", "numeric", "real", "double", "varchar", "char", "text"}
    ),
    staging_suffix=" ON COMMIT DROP",
    # Serialises appliers of one table so the ledger check and the merge see the same state; readers
    # (ACCESS SHARE) are not blocked.
    lock_target="LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE",
)
