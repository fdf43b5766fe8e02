"""Table definitions: the ``schemas/`` folder read into ``TableSchema``s and per-table options, column
policies (drop, null, HMAC hash), and conversion of source text to the tables' typed Arrow columns.
(Evolving a *target* table's shape is the warehouses' side: ``replicator.warehouses.evolution``.)

Exports:
- catalog: ``load_tables``, ``parse_table``, ``load_options``, ``parse_options``, ``TableOptions``,
  ``RedshiftLayout``, ``CatalogError``, ``column_names_problem``;
- policies: ``ColumnPolicies``, ``PolicyError``, ``target_schema``, ``apply`` (a table's policies to a batch);
- convert: ``typed_column``, ``resolve_unchanged``, ``null_key_mask``.
"""

from replicator.schema.catalog import (
    CatalogError,
    RedshiftLayout,
    TableOptions,
    column_names_problem,
    load_options,
    load_tables,
    parse_options,
    parse_table,
)
from replicator.schema.convert import null_key_mask, resolve_unchanged, typed_column
from replicator.schema.policies import ColumnPolicies, PolicyError, apply, target_schema

__all__ = [
    "CatalogError",
    "ColumnPolicies",
    "PolicyError",
    "RedshiftLayout",
    "TableOptions",
    "apply",
    "column_names_problem",
    "load_options",
    "load_tables",
    "null_key_mask",
    "parse_options",
    "parse_table",
    "resolve_unchanged",
    "target_schema",
    "typed_column",
]
