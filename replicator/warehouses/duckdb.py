"""DuckDB: the embedded default warehouse. No server; one file (or ``:memory:``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from replicator.model import TableSchema
from replicator.sql.ident import quote_ident, quote_literal
from replicator.warehouses.duckdb_sql import DUCKDB
from replicator.warehouses.sql_base import SqlWarehouse

CATALOG = "_replicator_target"


class DuckDBWarehouse(SqlWarehouse):
    """Loads staging with ``read_parquet`` straight from the local file and merges with ``MERGE INTO``.

    DuckDB writes a transaction to its WAL only at commit, so a process killed mid-merge leaves the file
    as it was. One process may open the file for writing at a time.
    """

    name = "duckdb"
    dialect = DUCKDB

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        """``read_only`` opens the file for status queries beside a running writer: only
        ``table_states`` and ``query`` work then."""
        # The file is attached under a fixed catalog name rather than opened directly: DuckDB names the
        # catalog after the file, and a file called like one of the replicated schemas ("dbo.duckdb",
        # "analytics.duckdb") would make every "schema"."table" reference ambiguous.
        self._con = duckdb.connect(":memory:")
        mode = " (READ_ONLY)" if read_only else ""
        self._con.execute(f"ATTACH {quote_literal(path)} AS {quote_ident(CATALOG)}{mode}")
        self._con.execute(f"USE {quote_ident(CATALOG)}")
        # Timestamps read back (table_states, tests) come out in UTC whatever the host's zone is.
        self._con.execute("SET TimeZone = 'UTC'")

    def _execute(self, sql: str) -> None:
        self._con.execute(sql)

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        return self._con.execute(sql).fetchall()

    def _begin(self) -> None:
        self._con.begin()

    def _commit(self) -> None:
        self._con.commit()

    def _rollback(self) -> None:
        self._con.rollback()

    def _load(self, schema: TableSchema, staging: str, parquet: Path, *, moves: bool) -> None:
        self._con.execute(self.dialect.insert_from_parquet(schema, staging, str(parquet), moves=moves))

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only query (tests, admin tooling)."""
        return self._query(sql)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Another connection to the same database, for another thread (the lease keeper, the admin API):
        only one process may open the file, so the daemon's side work shares this one."""
        cursor = self._con.cursor()
        cursor.execute(f"USE {quote_ident(CATALOG)}")  # a cursor starts in the default catalog
        cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    def close(self) -> None:
        self._con.close()
