"""SQL identifiers: the one place that quotes them (names come from source databases).

Exports: ``quote_ident``, ``quote_table``, ``quote_literal`` (PostgreSQL, DuckDB, Redshift) and
``quote_mssql_ident``, ``quote_mssql_table`` (SQL Server).
"""

from replicator.sql.ident import (
    quote_ident,
    quote_literal,
    quote_mssql_ident,
    quote_mssql_table,
    quote_table,
)

__all__ = ["quote_ident", "quote_literal", "quote_mssql_ident", "quote_mssql_table", "quote_table"]
