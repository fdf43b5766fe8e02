"""The one place identifiers are quoted. Names come from source databases and are never trusted."""

from __future__ import annotations

from replicator.model import TableId


def quote_ident(name: str) -> str:
    """Quote ``name`` as a SQL identifier (standard double quotes, embedded quotes doubled).

    PostgreSQL, Redshift and DuckDB all accept this form. NUL bytes are refused outright.
    """
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def quote_table(table: TableId) -> str:
    return f"{quote_ident(table.schema)}.{quote_ident(table.name)}"


def quote_literal(value: str) -> str:
    """A SQL string literal (standard quoting, quotes doubled). For values the replicator builds statements
    with (ids, positions, column names inside expressions); row data is always loaded, never inlined."""
    if "\x00" in value:
        raise ValueError("NUL byte in SQL literal")
    return "'" + value.replace("'", "''") + "'"


def quote_mssql_ident(name: str) -> str:
    """Quote ``name`` as a SQL Server identifier: ``[name]``, embedded ``]`` doubled.

    Brackets work whatever the session's QUOTED_IDENTIFIER setting is, unlike double quotes.
    """
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier {name!r}")
    return "[" + name.replace("]", "]]") + "]"


def quote_mssql_table(table: TableId) -> str:
    return f"{quote_mssql_ident(table.schema)}.{quote_mssql_ident(table.name)}"
