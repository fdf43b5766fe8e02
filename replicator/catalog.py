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
from pathlib import Path

from replicator.model import Column, TableId, TableSchema
from replicator.types import parse_type


class CatalogError(ValueError):
    pass


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
