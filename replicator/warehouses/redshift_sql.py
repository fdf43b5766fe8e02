"""The Redshift dialect, its COPY statement and table layout. Pure: builders only, nothing connects.

What shapes the SQL (see DESIGN.md "Targets"):

- MERGE takes one unconditional ``WHEN MATCHED`` and one ``WHEN NOT MATCHED``, no target alias and a table
  (not a query) as its source: deletes run first as ``DELETE ... USING``, the upserts are copied into a
  table of their own, and the MERGE only upserts (``Dialect.single_when_matched``).
- No ``DISTINCT ON``: the last change per key is kept with ``row_number()``.
- ``COPY ... FORMAT AS PARQUET`` matches columns by position, so the staging table holds every column of
  the staged file in the file's order (``staging_all_metadata``: table columns, ``_op``, ``_seq``, ``_pos``,
  ``_commit_time``, ``_unchanged``), exactly ``replicator.stage.arrow_schema``.
- VARCHAR lengths count bytes, not characters: a source ``varchar(n)`` (characters) becomes ``VARCHAR(4n)``,
  because UTF-8 needs up to 4 bytes per character, capped at Redshift's 65535. Redshift's CHAR holds
  single-byte characters only, so ``char(n)`` is a VARCHAR as well (the source's padding is in the data).
- ``_unchanged`` (a Parquet list) loads into SUPER; ``json_serialize`` of that array is compact JSON, so
  ``,"name",`` inside ``,<elements>,`` matches exactly one column name (a quote inside a JSON string is
  always escaped, so an unescaped ``,"`` only starts an element).
- ``ALTER COLUMN ... TYPE`` can only lengthen a VARCHAR and commits implicitly (``alter_commits``);
  int -> bigint and numeric precision changes are reported as incompatible.
- Concurrent writers fail with ``1023 serializable isolation violation``: every apply locks the ledger,
  the progress table and then the target, always in that order, and retries on 1023.
"""

from __future__ import annotations

import dataclasses

from replicator.model import Column
from replicator.schema.catalog import RedshiftLayout
from replicator.sql.ident import quote_ident, quote_literal, quote_table
from replicator.values.types import SCALAR_KINDS, TEXT_KINDS
from replicator.warehouses.dialect import LEDGER, PROGRESS, Dialect

VARCHAR_MAX = 65535
BYTES_PER_CHAR = 4  # UTF-8's worst case; sizing by it never truncates what the source column holds

REDSHIFT = Dialect(
    name="redshift",
    types={
        "smallint": "SMALLINT",
        "integer": "INTEGER",
        "bigint": "BIGINT",
        "numeric": "DECIMAL(38,10)",
        "real": "REAL",
        "double": "DOUBLE PRECISION",
        "boolean": "BOOLEAN",
        "text": f"VARCHAR({VARCHAR_MAX})",
        "varchar": f"VARCHAR({VARCHAR_MAX})",
        "char": f"VARCHAR({VARCHAR_MAX})",
        "date": "DATE",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ",
        "time": "TIME",
        "uuid": "VARCHAR(36)",
        "json": "SUPER",
        "bytea": "VARBYTE(1024000)",
        "oid": "BIGINT",
        # PostgreSQL's text as it was written: Redshift has none of these types (its TIMETZ and INTERVAL
        # are not what COPY makes of a Parquet string), and no arrays (SUPER would change the text).
        **{k: f"VARCHAR({VARCHAR_MAX})" for k in TEXT_KINDS},
        **{f"{k}[]": f"VARCHAR({VARCHAR_MAX})" for k in SCALAR_KINDS},
    },
    sized={
        "numeric": "DECIMAL({precision},{scale})",
        "varchar": "VARCHAR({length})",
        "char": "VARCHAR({length})",
    },
    # The stage keeps a numeric without precision as its exact text (no decimal type holds every
    # PostgreSQL numeric), and COPY of a Parquet string into DECIMAL is not a conversion Redshift makes:
    # keep it as text. Declare the precision in schemas/ to get a DECIMAL column.
    unconstrained_numeric="VARCHAR(1024)",
    text_array="SUPER",
    unchanged_test="strpos(',' || btrim(json_serialize({list}), '[]') || ',', {json_item}) > 0",
    staging_create="CREATE TEMP TABLE",
    distinct_on=False,
    merge_statement=True,
    single_when_matched=True,
    target_alias=False,
    lock_target=f"LOCK {quote_table(LEDGER)}, {quote_table(PROGRESS)}, {{table}}",
    varchar_bytes_per_char=BYTES_PER_CHAR,
    varchar_max_bytes=VARCHAR_MAX,
    staging_all_metadata=True,
    now="SYSDATE",  # CURRENT_TIMESTAMP/NOW() are leader-node functions in Redshift
    alter_type="ALTER TABLE {table} ALTER COLUMN {column} TYPE {type}",
    alter_commits=True,
    widen_kinds=frozenset({"varchar", "char", "text"}),
)

# The classic Redshift upsert: DELETE ... USING, UPDATE ... FROM, INSERT ... WHERE NOT EXISTS (no MERGE).
REDSHIFT_DELETE_INSERT = dataclasses.replace(REDSHIFT, merge_statement=False)


def copy_parquet(staging: str, url: str, iam_role: str, *, region: str = "") -> str:
    """COPY a staged Parquet file from S3 into the staging table; columns match by position.

    ``SERIALIZETOJSON`` loads the nested ``_unchanged`` list into its SUPER column.
    """
    if not url.startswith("s3://"):
        raise ValueError(f"Redshift loads staging from S3 only, not {url!r}")
    region_clause = f" REGION {quote_literal(region)}" if region else ""
    return (
        f"COPY {quote_ident(staging)} FROM {quote_literal(url)} IAM_ROLE {quote_literal(iam_role)}"
        f"{region_clause} FORMAT AS PARQUET SERIALIZETOJSON"
    )


def layout(columns: tuple[Column, ...], spec: RedshiftLayout) -> tuple[dict[str, str], str]:
    """(column -> ENCODE clause, table suffix with DISTSTYLE/DISTKEY/SORTKEY) for ``create_table``."""
    encodings = {name: f"ENCODE {enc.upper()}" for name, enc in spec.encode}
    names = {c.name for c in columns}
    parts = []
    style = spec.diststyle or ("key" if spec.distkey else "")
    if style:
        parts.append(f"DISTSTYLE {style.upper()}")
    if spec.distkey and spec.distkey in names:
        parts.append(f"DISTKEY ({quote_ident(spec.distkey)})")
    sort = [k for k in spec.sortkey if k in names]
    if sort:
        parts.append(f"SORTKEY ({', '.join(quote_ident(k) for k in sort)})")
    return {k: v for k, v in encodings.items() if k in names}, "".join(f" {p}" for p in parts)
