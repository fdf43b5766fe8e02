"""DuckDB: the embedded default warehouse. No server; one file (or ``:memory:``).

``DUCKDB`` is its dialect (types and capability flags for the shared SQL builders), ``DuckDBWarehouse`` the
connection side.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from replicator.config import Config, resolve
from replicator.model import Manifest, TableSchema
from replicator.sql import quote_ident, quote_literal
from replicator.values import SCALAR_KINDS, TEXT_KINDS
from replicator.warehouses.base import ApplyResult
from replicator.warehouses.dialect import Dialect
from replicator.warehouses.sql_base import SqlWarehouse

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
    reads_parquet=True,
    reduce_by_join=True,
    # VARCHAR has no length here; numbers widen with ALTER COLUMN TYPE
    widen_kinds=frozenset({"smallint", "integer", "bigint", "numeric", "real", "double"}),
)


CATALOG = "_replicator_target"

# DuckDB's Linux builds allocate through their own jemalloc, which keeps the pages a statement frees for
# reuse (purging them over seconds, and only while it allocates). A merge of large values frees hundreds
# of megabytes at once (DuckDB materialises a table's large column whole when it updates or checkpoints
# it), and that stayed resident through the reading and staging that followed. Handed back after each
# round, the merges of tests/benchmarks/test_bench_pg_large_values.py run alone left 550 MB resident between
# them instead of 977-1152 MB, and the benchmark's peak fell from 1170-1206 MB to 1057-1134 MB. Only past
# RELEASE_BYTES of them: merges of 100k small rows leave 20-77 MB freed (jemalloc reuses or decays it),
# and handing that back each round cost them 4-14% of their time. The switch is jemalloc's own control
# call, which the DuckDB module exports; where it does not (macOS, Windows, musl), nothing is done.
RELEASE_BYTES = 128 << 20
_DIRTY_PAGES = b"stats.arenas.4096.pdirty"  # 4096: MALLCTL_ARENAS_ALL, every arena
_PURGE = b"arena.4096.purge"


def _mallctl() -> Callable[..., int] | None:
    library = getattr(sys.modules.get(duckdb.DuckDBPyConnection.__module__), "__file__", None)
    try:
        fn = ctypes.CDLL(library).duckdb_je_mallctl if library else None
    except (OSError, AttributeError):
        return None
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_MALLCTL = _mallctl()


def allocator_free_bytes() -> int | None:
    """Bytes DuckDB's allocator holds freed but not yet handed back to the system (None: no jemalloc)."""
    if _MALLCTL is None:
        return None
    epoch, pages, page = ctypes.c_uint64(1), ctypes.c_size_t(0), ctypes.c_size_t(0)
    size = ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
    _MALLCTL(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch))  # refresh the statistics
    if _MALLCTL(_DIRTY_PAGES, ctypes.byref(pages), ctypes.byref(size), None, 0):
        return None
    if _MALLCTL(b"arenas.page", ctypes.byref(page), ctypes.byref(size), None, 0):
        return None
    return pages.value * page.value


def release_allocator_memory(at_least: int = RELEASE_BYTES) -> int:
    """Hand DuckDB's freed pages back to the system when there are ``at_least`` bytes of them; returns
    the bytes handed back (0: too few, or no jemalloc)."""
    free = allocator_free_bytes()
    if _MALLCTL is None or free is None or free < at_least:
        return 0
    _MALLCTL(_PURGE, None, None, None, 0)
    return free


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

    release_bytes = RELEASE_BYTES  # freed allocator memory handed back after a merge round beyond this

    def apply_round(self, batches: list[tuple[Manifest, TableSchema, Path]]) -> list[ApplyResult]:
        """``SqlWarehouse.apply_round``, then what it freed is handed back (``release_allocator_memory``)."""
        try:
            return super().apply_round(batches)
        finally:
            release_allocator_memory(self.release_bytes)

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


def open_warehouse(cfg: Config, *, read_only: bool = False) -> DuckDBWarehouse:
    """``[warehouse] kind = "duckdb"``: the database file at ``path`` (relative to the config file)."""
    return DuckDBWarehouse(resolve(cfg, cfg.warehouse.path), read_only=read_only)
