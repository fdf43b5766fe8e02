"""DuckDB: the embedded default warehouse. No server; one file (or ``:memory:``).

``DUCKDB`` is its dialect (types and capability flags for the shared SQL builders), ``DuckDBWarehouse`` the
connection side.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from replicator.config import Config, resolve
from replicator.model import (
    OP_COLUMN,
    SEQ_COLUMN,
    SOFT_DELETED,
    SOFT_DELETED_AT,
    UNCHANGED_COLUMN,
    Manifest,
    TableSchema,
)
from replicator.sql import quote_ident, quote_literal, quote_table
from replicator.values import SCALAR_KINDS, TEXT_KINDS
from replicator.warehouses.base import ApplyResult
from replicator.warehouses.dialect import Dialect
from replicator.warehouses.sql_base import BatchInfo, SqlWarehouse

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
        if not self._large_round:
            self._con.commit()
            return
        used = self._used_bytes()
        if self._vacuum_at is None:
            self._vacuum_at = used + self.vacuum_slack_bytes
        if used > self._vacuum_at:  # this commit and a checkpoint vacuum (the commit may not checkpoint)
            self._con.commit()
            with contextlib.suppress(duckdb.Error):  # committed already: a later round tries again
                self._con.execute("CHECKPOINT")
                used = self._used_bytes()
                self._vacuum_at = max(2 * used, used + self.vacuum_slack_bytes)
            return
        # The checkpoint this commit may run does not vacuum: a vacuum rewrites the row groups holding the
        # rows a large-value merge deleted, merged up to 122,880 rows (a table of large values: all of it),
        # and DuckDB holds the large column of what it rewrites whole (see ``_LargeMerge``). A row group
        # whose rows are all deleted is dropped without it; the rest waits for a vacuuming checkpoint:
        # another round's, or a round of large values' once the file's used bytes pass ``_vacuum_at``.
        self._con.execute("SET max_vacuum_tasks = 0")
        try:
            self._con.commit()
        finally:
            self._con.execute("RESET max_vacuum_tasks")

    def _used_bytes(self) -> int:
        """Bytes of the database file in use (as of its last checkpoint)."""
        [(used,)] = self._con.execute(
            "SELECT used_blocks * block_size FROM pragma_database_size() WHERE database_name = ?", [CATALOG]
        ).fetchall()
        return int(used)

    def _rollback(self) -> None:
        self._con.rollback()

    release_bytes = RELEASE_BYTES  # freed allocator memory handed back after a merge round beyond this
    # Batches of large values (``_LargeMerge``): a batch whose variable-size values (text, JSON, bytes)
    # average ``large_batch_row_bytes`` per row, or that leaves values unsent (a PostgreSQL source's
    # unchanged TOAST: the table holds large values), takes that merge unless ``large_merges`` is off.
    large_merges = True
    large_batch_row_bytes = 8 << 10
    large_row_bytes = 32 << 10  # in it, a row sending this many bytes is deleted and inserted again
    slice_bytes = 16 << 20  # such rows are rewritten in runs of about this many bytes
    _large_round = False  # the open transaction took ``_LargeMerge``
    # Rounds of large values skip the vacuum until the file uses twice its size after the last vacuum, and
    # at least this much more (the vacuum then costs one large spike; the file stays within that bound).
    vacuum_slack_bytes = 256 << 20
    _vacuum_at: int | None = None  # set by the first round of large values

    def apply_round(self, batches: list[tuple[Manifest, TableSchema, Path]]) -> list[ApplyResult]:
        """``SqlWarehouse.apply_round``, then what it freed is handed back (``release_allocator_memory``):
        all of it after a round of large values."""
        self._large_round = False
        try:
            return super().apply_round(batches)
        finally:
            release_allocator_memory(0 if self._large_round else self.release_bytes)
            self._large_round = False

    def _is_large(self, schema: TableSchema, parquet: Path, info: BatchInfo) -> bool:
        if not self.large_merges:
            return False
        if info.unchanged:
            return True
        return _text_bytes(schema, parquet) >= self.large_batch_row_bytes * max(info.rows, 1)

    def _reduce(
        self, schema: TableSchema, staging: str, reduced: str, parquet: Path, info: BatchInfo
    ) -> bool:
        """A batch of large values is reduced by a view (the same query): a table would hold a copy of its
        values."""
        if not self._is_large(schema, parquet, info):
            return super()._reduce(schema, staging, reduced, parquet, info)
        as_view = dataclasses.replace(self.dialect, staging_create="CREATE TEMP VIEW")
        self._con.execute(as_view.reduce(schema, staging, reduced, moves=info.moves))
        return True

    def _merge_rows(
        self,
        schema: TableSchema,
        source: str,
        parquet: Path,
        info: BatchInfo,
        *,
        soft_delete: bool,
        nulls: tuple[str, ...],
        old_images: str | None,
    ) -> None:
        """The MERGE, or ``_LargeMerge`` for a batch of large values."""
        if old_images is None and self._is_large(schema, parquet, info):
            self._large_round = True
            merge = _LargeMerge(self._con, schema, source, info, soft_delete=soft_delete, nulls=nulls)
            merge.run(wide_bytes=self.large_row_bytes, slice_bytes=self.slice_bytes)
        else:
            super()._merge_rows(
                schema, source, parquet, info, soft_delete=soft_delete, nulls=nulls, old_images=old_images
            )

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
        if self._vacuum_at is not None:  # nor does the checkpoint on closing, after rounds of large values
            self._con.execute("SET max_vacuum_tasks = 0")
        self._con.close()


# -- batches of large values ---------------------------------------------------------------------------

_DELETE = quote_literal("D")
_SIZED_TYPES = frozenset({"VARCHAR", "JSON", "BLOB"})


def _sized_columns(schema: TableSchema) -> list[tuple[str, str]]:
    """(name, SQL of its value's size in bytes in row ``s``) of the non-key columns of variable size."""
    out = []
    for c in schema.columns:
        kind = DUCKDB.column_type(c.type)
        if c.name in schema.primary_key or kind not in _SIZED_TYPES:
            continue
        value = f"s.{quote_ident(c.name)}"
        out.append(
            (c.name, f"octet_length({value})" if kind == "BLOB" else f"strlen(CAST({value} AS VARCHAR))")
        )
    return out


def _text_bytes(schema: TableSchema, parquet: Path) -> int:
    """Uncompressed bytes of the staged file's variable-size columns, from its footer (nothing is read)."""
    sized = {name for name, _ in _sized_columns(schema)}
    meta = pq.ParquetFile(parquet).metadata
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for i in range(group.num_columns):
            column = group.column(i)
            if column.path_in_schema in sized:
                total += column.total_uncompressed_size
    return total


class _LargeMerge:
    """The merge of a batch of large values, with the effect of ``Dialect.merge`` on the one-row-per-key
    ``source``, in statements during which DuckDB never holds more than a slice of the batch's values nor
    a whole column of the target.

    DuckDB works on vectors of 2,048 rows and compresses long text per vector (ZSTD): reading one large
    value of a table of a few hundred such rows decompresses all of them, and an UPDATE of a large column
    holds the new values, the old ones and, at the checkpoint, the whole column of the row group it
    rewrites (the MERGE of a 64 MB batch into a 200 MB table added 470-630 MB). So: deletes read the keys
    only; rows sending little (``wide_bytes``) are updated in place, by one UPDATE per set of unsent
    columns (no CASE reads a column they did not send); the others are deleted and inserted again
    (appended: nothing is rewritten in place) in slices of ``slice_bytes``, with the values they did not
    send read from the target's row before it is deleted, one exact key lookup per row (an IN list or a
    join reads every row of the column). The statements run in the merge's transaction: the batch and its
    ledger row still commit together."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        schema: TableSchema,
        source: str,
        info: BatchInfo,
        *,
        soft_delete: bool,
        nulls: tuple[str, ...],
    ) -> None:
        self.con, self.schema, self.info = con, schema, info
        self.soft_delete, self.nulls = soft_delete, nulls
        self.target = quote_table(schema.table)
        self.source = quote_ident(source)
        self.rows = quote_ident(source + "_z")  # per row of source: _seq, key, _op, _unchanged, _bytes
        self.slice = quote_ident(source + "_w")
        self.on = " AND ".join(f"t.{quote_ident(k)} = s.{quote_ident(k)}" for k in schema.primary_key)

    def run(self, *, wide_bytes: int, slice_bytes: int) -> None:
        size = " + ".join(f"coalesce({e}, 0)" for _, e in _sized_columns(self.schema)) or "0"
        key = ", ".join(f"s.{quote_ident(k)}" for k in self.schema.primary_key)
        meta = ", ".join(f"s.{quote_ident(c)}" for c in (SEQ_COLUMN, OP_COLUMN, UNCHANGED_COLUMN))
        self.con.execute(
            f"CREATE TEMP TABLE {self.rows} AS SELECT {key}, {meta}, {size} AS _bytes FROM {self.source} AS s"
        )
        try:
            self._deletes()
            self._narrow(wide_bytes)
            self._wide(wide_bytes, slice_bytes)
        finally:
            self.con.execute(f"DROP TABLE IF EXISTS {self.rows}")
            self.con.execute(f"DROP TABLE IF EXISTS {self.slice}")

    def _deletes(self) -> None:
        deleted = f"{self.on} AND s.{quote_ident(OP_COLUMN)} = {_DELETE}"
        if self.soft_delete:
            mark = f"{quote_ident(SOFT_DELETED)} = TRUE, {quote_ident(SOFT_DELETED_AT)} = {DUCKDB.now}"
            self.con.execute(f"UPDATE {self.target} AS t SET {mark} FROM {self.rows} AS s WHERE {deleted}")
        else:
            self.con.execute(f"DELETE FROM {self.target} AS t USING {self.rows} AS s WHERE {deleted}")

    def _inserted(self) -> tuple[list[str], list[str]]:
        """The target columns an insert names, and their values from row ``s``: the batch's columns, the
        target's dropped ones (NULL, as the MERGE's update sets them) and the soft-delete marks."""
        names = [*self.schema.column_names, *self.nulls]
        values = [f"s.{quote_ident(c)}" for c in self.schema.column_names] + ["NULL"] * len(self.nulls)
        if self.soft_delete:
            names += [SOFT_DELETED, SOFT_DELETED_AT]
            values += ["FALSE", "NULL"]
        return [quote_ident(n) for n in names], values

    def _narrow(self, wide_bytes: int) -> None:
        seq, unchanged = quote_ident(SEQ_COLUMN), quote_ident(UNCHANGED_COLUMN)
        narrow = (
            f"s.{seq} IN (SELECT {seq} FROM {self.rows} WHERE {quote_ident(OP_COLUMN)} <> {_DELETE}"
            f" AND _bytes < {int(wide_bytes)})"
        )
        keys = set(self.schema.primary_key)
        clear = [f"{quote_ident(SOFT_DELETED)} = FALSE", f"{quote_ident(SOFT_DELETED_AT)} = NULL"]
        patterns = self.con.execute(f"SELECT DISTINCT s.{unchanged} FROM {self.rows} AS s WHERE {narrow}")
        for (pattern,) in patterns.fetchall():
            unsent = set(pattern or ()) & set(self.info.unchanged)
            sets = [f"{quote_ident(c)} = s.{quote_ident(c)}" for c in self.schema.column_names
                    if c not in keys and c not in unsent]  # fmt: skip
            sets += [f"{quote_ident(c)} = NULL" for c in self.nulls] + (clear if self.soft_delete else [])
            if not sets:  # key columns only: nothing to update
                continue
            same = f"s.{unchanged} IS NULL" if pattern is None else f"s.{unchanged} = ?"
            self.con.execute(
                f"UPDATE {self.target} AS t SET {', '.join(sets)} FROM {self.source} AS s"
                f" WHERE {self.on} AND {narrow} AND {same}",
                [] if pattern is None else [pattern],
            )
        names, values = self._inserted()
        self.con.execute(
            f"INSERT INTO {self.target} ({', '.join(names)}) SELECT {', '.join(values)} FROM {self.source}"
            f" AS s WHERE {narrow} AND NOT EXISTS (SELECT 1 FROM {self.target} AS t WHERE {self.on})"
        )

    def _wide(self, wide_bytes: int, slice_bytes: int) -> None:
        seq, key = quote_ident(SEQ_COLUMN), self.schema.primary_key
        rows = self.con.execute(
            f"SELECT {seq}, {', '.join(quote_ident(k) for k in key)}, {quote_ident(UNCHANGED_COLUMN)}, _bytes"
            f" FROM {self.rows} WHERE {quote_ident(OP_COLUMN)} <> {_DELETE} AND _bytes >= {int(wide_bytes)}"
            f" ORDER BY {seq}"
        ).fetchall()
        by_unsent: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for row in rows:  # rows leaving the same columns unsent: only those are read from the target
            unsent = tuple(c for c in self.info.unchanged if c in (row[1 + len(key)] or ()))
            by_unsent.setdefault(unsent, []).append(row)
        on_w = " AND ".join(f"t.{quote_ident(k)} = w.{quote_ident(k)}" for k in key)
        match = " AND ".join(f"x.{quote_ident(k)} = ?" for k in key)
        for unsent, group in by_unsent.items():
            names, values = self._inserted()
            for c in unsent:
                values[self.schema.column_names.index(c)] = f"t.{quote_ident(c)}"
            filled = ", ".join(f"{v} AS {n}" for v, n in zip(values, names, strict=True))
            lookup = f"SELECT {', '.join(quote_ident(c) for c in [*key, *unsent])} FROM {self.target} AS x"
            for part in _slices(group, slice_bytes):
                params: list[Any] = [r[0] for r in part]
                join = ""
                if unsent:  # one exact lookup per row
                    join = f" LEFT JOIN ({' UNION ALL '.join(f'{lookup} WHERE {match}' for _ in part)}) AS t"
                    join += f" ON {self.on}"
                    params += [v for r in part for v in r[1 : 1 + len(key)]]
                chosen = f"SELECT * FROM {self.source} AS s WHERE s.{seq} IN ({', '.join('?' * len(part))})"
                self.con.execute(
                    f"CREATE TEMP TABLE {self.slice} AS SELECT {filled} FROM ({chosen}) AS s{join}", params
                )
                self.con.execute(f"DELETE FROM {self.target} AS t USING {self.slice} AS w WHERE {on_w}")
                self.con.execute(f"INSERT INTO {self.target} ({', '.join(names)}) SELECT * FROM {self.slice}")
                self.con.execute(f"DROP TABLE {self.slice}")


def _slices(rows: list[tuple[Any, ...]], limit: int) -> list[list[tuple[Any, ...]]]:
    """``rows`` (each with its size in bytes last) in runs of at most ``limit`` bytes; a larger row alone."""
    runs: list[list[tuple[Any, ...]]] = []
    size = 0
    for row in rows:
        bytes_ = int(row[-1] or 0)
        if not runs or (runs[-1] and size + bytes_ > limit):
            runs.append([])
            size = 0
        runs[-1].append(row)
        size += bytes_
    return runs


def open_warehouse(cfg: Config, *, read_only: bool = False) -> DuckDBWarehouse:
    """``[warehouse] kind = "duckdb"``: the database file at ``path`` (relative to the config file)."""
    return DuckDBWarehouse(resolve(cfg, cfg.warehouse.path), read_only=read_only)
