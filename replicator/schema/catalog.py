"""Table definitions from the ``schemas/`` folder.

One TOML file per table under ``schemas/tables/``::

    schema = "dbo"
    name = "payments"
    primary_key = ["payment_id"]

    [columns]            # in source column order
    payment_id = "bigint not null"
    amount = "numeric(12,2)"
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from replicator.model import METADATA_COLUMNS, SOFT_DELETED, SOFT_DELETED_AT, Column, TableId, TableSchema
from replicator.values import parse_type

# Names the replicator gives its own columns: those of every staged file (METADATA_COLUMNS) and any starting
# with RESERVED_PREFIX (the merge's working columns, e.g. ``_replicator_rn``). A source column may never be
# named so: in the staging table it would be the replicator's column, not the source's. Compared without
# case, as DuckDB and Redshift fold identifiers (``_OP`` is ``_op`` there). Soft-delete columns
# (``_deleted``, ``_deleted_at``) are reserved only on tables with ``deletes = "soft"`` (see parse_options),
# since many source tables carry a ``_deleted`` flag of their own.
RESERVED_PREFIX = "_replicator"


class CatalogError(ValueError):
    pass


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a schema, table or column in any warehouse; None when it can.

    Empty names and NUL bytes are refused by every target (``quote_ident`` refuses them too): such a name
    must be rejected before anything is staged, or every merge of its table fails.
    """
    if not name:
        return "a name is empty"
    if "\x00" in name:
        return f"name {name!r} holds a NUL byte, which no warehouse accepts in an identifier"
    return None


def path_name_problem(name: str) -> str | None:
    """Why a schema or table name cannot be used: they name folders and objects (``schema/table/`` in a DMS
    feed, ``schema.table`` in staging), so a name that reads as a path would leave its folder."""
    if name in (".", "..") or any(c in name for c in "/\\"):
        return f"name {name!r} is path-like ('.', '..', '/' or '\\'): schema and table names are folders"
    return None


def column_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a source column (unusable, or the replicator's); None when it can."""
    problem = name_problem(name)
    if problem is not None:
        return problem
    folded = name.lower()
    if folded in METADATA_COLUMNS or folded.startswith(RESERVED_PREFIX):
        return (
            f"column name {name!r} is reserved for the replicator's own columns "
            f"({', '.join(sorted(METADATA_COLUMNS))} and names starting with {RESERVED_PREFIX}, in any case)"
        )
    return None


def column_names_problem(names: Iterable[str]) -> str | None:
    """The first problem of a table's column names, duplicates without case included; None when fine."""
    seen: dict[str, str] = {}
    for name in names:
        problem = column_name_problem(name)
        if problem is not None:
            return problem
        other = seen.setdefault(name.lower(), name)
        if other != name:
            return f"columns {other!r} and {name!r} differ only in case (DuckDB and Redshift fold case)"
    return None


def load_tables(folder: Path) -> dict[TableId, TableSchema]:
    """Every ``*.toml`` in ``folder/tables`` (or ``folder`` itself when it has no ``tables`` subfolder)."""
    base = folder / "tables" if (folder / "tables").is_dir() else folder
    if not base.is_dir():
        raise CatalogError(f"schema folder {base} does not exist")
    out: dict[TableId, TableSchema] = {}
    for path in sorted(base.glob("*.toml")):
        schema = parse_table(path)
        if schema.table in out:
            raise CatalogError(f"{path}: table {schema.table} is defined twice")
        out[schema.table] = schema
    return out


def parse_table(path: Path) -> TableSchema:
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{path}: {exc}") from None
    try:
        table = TableId(str(doc["schema"]), str(doc["name"]))
        cols_doc = doc["columns"]
        pk = tuple(str(k) for k in doc.get("primary_key", []))
    except KeyError as exc:
        raise CatalogError(f"{path}: missing key {exc.args[0]!r} (need schema, name, columns)") from None
    if not isinstance(cols_doc, dict) or not cols_doc:
        raise CatalogError(f"{path}: [columns] must map column names to types")
    problem = (
        name_problem(table.schema) or name_problem(table.name) or path_name_problem(table.schema)
        or path_name_problem(table.name) or column_names_problem(cols_doc)
    )  # fmt: skip
    if problem is not None:
        raise CatalogError(f"{path}: {table}: {problem}")
    columns = []
    for name, spec in cols_doc.items():
        text = str(spec).strip()
        nullable = True
        if text.lower().endswith(" not null"):
            text, nullable = text[: -len(" not null")], False
        try:
            columns.append(Column(name, parse_type(text), nullable=nullable and name not in pk))
        except ValueError as exc:
            raise CatalogError(f"{path}: column {name}: {exc}") from None
    try:
        return TableSchema(table, tuple(columns), pk)
    except ValueError as exc:
        raise CatalogError(f"{path}: {exc}") from None


# -- per-table options (optional keys of the same TOML files) -------------------------------------------
#
#     deletes = "soft"             # "hard" (default) removes the row; "soft" sets _deleted/_deleted_at
#     dropped_columns = "null"     # a column dropped at the source: "null" (default) or "keep" its value
#
#     [policies]                         # sensitive columns: "drop", "null" or "hash" (HMAC-SHA256)
#     email = "hash"
#
#     [redshift]                         # physical layout, Redshift only
#     diststyle = "key"                  # auto | even | key | all
#     distkey = "practice_id"
#     sortkey = ["practice_id", "updated_at"]
#     encode = { notes = "zstd" }


@dataclass(frozen=True, slots=True)
class RedshiftLayout:
    diststyle: str = ""
    distkey: str = ""
    sortkey: tuple[str, ...] = ()
    encode: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TableOptions:
    deletes: str = "hard"
    dropped_columns: str = "null"
    policies: tuple[tuple[str, str], ...] = ()
    redshift: RedshiftLayout = field(default_factory=RedshiftLayout)
    # PostgreSQL source, a table with no primary key and no REPLICA IDENTITY FULL (its updates and deletes
    # cannot be replicated): "insert_only" replicates its inserts with a start-up warning, "refuse" stops
    # the start-up with the fix.
    keyless: str = "insert_only"

    @property
    def soft_delete(self) -> bool:
        return self.deletes == "soft"


_DISTSTYLES = ("auto", "even", "key", "all")
_ENCODINGS = ("raw", "az64", "bytedict", "delta", "delta32k", "lzo", "mostly8", "mostly16", "mostly32",
              "runlength", "text255", "text32k", "zstd")  # fmt: skip


def load_options(folder: Path) -> dict[TableId, TableOptions]:
    """Options of every table defined in ``folder`` (defaults where a file sets none)."""
    base = folder / "tables" if (folder / "tables").is_dir() else folder
    out: dict[TableId, TableOptions] = {}
    for path in sorted(base.glob("*.toml")):
        schema = parse_table(path)
        out[schema.table] = parse_options(path, schema)
    return out


def parse_options(path: Path, schema: TableSchema) -> TableOptions:
    doc = tomllib.loads(path.read_text())
    names = set(schema.column_names)

    def choice(key: str, allowed: tuple[str, ...], value: object) -> str:
        if value not in allowed:
            raise CatalogError(f"{path}: {key} must be one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    def column(key: str, value: object) -> str:
        if value not in names:
            raise CatalogError(f"{path}: {key} names {value!r}, which is not a column of {schema.table}")
        return str(value)

    deletes = choice("deletes", ("hard", "soft"), doc.get("deletes", "hard"))
    if deletes == "soft":
        taken = sorted(n for n in names if n.lower() in (SOFT_DELETED, SOFT_DELETED_AT))
        if taken:
            raise CatalogError(
                f'{path}: column {taken[0]!r} is reserved on a table with deletes = "soft" (the replicator '
                f'adds {SOFT_DELETED} and {SOFT_DELETED_AT}); keep deletes = "hard" for this table'
            )
    dropped = choice("dropped_columns", ("null", "keep"), doc.get("dropped_columns", "null"))
    policies = tuple(
        (column(f"policies.{k}", k), choice(f"policies.{k}", ("drop", "null", "hash"), v))
        for k, v in dict(doc.get("policies", {})).items()
    )
    rs = dict(doc.get("redshift", {}))
    unknown = set(rs) - {"diststyle", "distkey", "sortkey", "encode"}
    if unknown:
        raise CatalogError(f"{path}: unknown key redshift.{sorted(unknown)[0]}")
    layout = RedshiftLayout(
        diststyle=choice("redshift.diststyle", ("", *_DISTSTYLES), str(rs.get("diststyle", "")).lower()),
        distkey=column("redshift.distkey", rs["distkey"]) if "distkey" in rs else "",
        sortkey=tuple(column("redshift.sortkey", k) for k in rs.get("sortkey", [])),
        encode=tuple(
            (column(f"redshift.encode.{k}", k), choice(f"redshift.encode.{k}", _ENCODINGS, str(v).lower()))
            for k, v in dict(rs.get("encode", {})).items()
        ),
    )
    if layout.distkey and layout.diststyle not in ("", "key"):
        raise CatalogError(f'{path}: redshift.distkey needs diststyle = "key" (or no diststyle)')
    keyless = choice("keyless", ("insert_only", "refuse"), doc.get("keyless", "insert_only"))
    return TableOptions(deletes, dropped, policies, layout, keyless=keyless)
