"""The apply algorithm shared by the SQL warehouses (DuckDB, PostgreSQL); engines differ only in I/O.

A subclass supplies a connection (``_execute``, ``_query``, ``_begin``, ``_commit``, ``_rollback``) and a
loader (``_load``: staged Parquet -> staging table); the statements come from its ``Dialect``.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from replicator.model import (
    FROM_SEQ_COLUMN,
    OP_COLUMN,
    SEQ_COLUMN,
    UNCHANGED_COLUMN,
    Manifest,
    Position,
    TableId,
    TableSchema,
)
from replicator.schema import ColumnPolicies, TableOptions, target_schema
from replicator.sql import quote_table
from replicator.storage import crash_point
from replicator.warehouses import evolution
from replicator.warehouses.base import STAGING_PREFIX, ApplyResult, TableState
from replicator.warehouses.dialect import Dialect

_OPS = pa.array(["I", "U", "D"])


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What the merge needs to know about a staged file before loading it."""

    rows: int
    unique_keys: bool  # every primary key appears once: the reduce step can be skipped
    deletes: int  # rows whose op is D (equals keys deleted when unique_keys)
    unchanged: tuple[str, ...]  # non-key columns some row did not send, in schema order
    truncate: bool = False  # the batch is one TRUNCATE row (_op 'T'): empty the target, nothing else
    moves: bool = False  # key changes: some unsent values are under an old key (``FROM_SEQ_COLUMN``)


def inspect_batch(parquet: Path, schema: TableSchema) -> BatchInfo:
    """Read only the key and metadata columns of a staged file and validate its layout.

    Raises ``ValueError`` when a column is missing or an ``_op`` is not I/U/D: such a file is bad input to
    quarantine, and merging it anyway could silently drop changes.
    """
    present = set(pq.read_schema(parquet).names)
    needed = [*schema.column_names, OP_COLUMN, SEQ_COLUMN, UNCHANGED_COLUMN]
    missing = [c for c in needed if c not in present]
    if missing:
        raise ValueError(f"{parquet}: staged file of {schema.table} lacks column(s) {missing}")
    t = pq.read_table(parquet, columns=[*schema.primary_key, OP_COLUMN, UNCHANGED_COLUMN])
    if t.num_rows == 0:
        # Every change of the batch was set aside at staging (quarantined by policy): nothing to merge,
        # but the batch is recorded like any other, so its positions count as applied.
        return BatchInfo(rows=0, unique_keys=True, deletes=0, unchanged=())
    ops = t[OP_COLUMN]
    if t.num_rows == 1 and ops[0].as_py() == "T":
        # The buffer makes every TRUNCATE a batch of its own: one all-NULL row. Anything else with a 'T'
        # (a truncate mixed with row changes) is refused below like any unknown op.
        return BatchInfo(rows=1, unique_keys=True, deletes=0, unchanged=(), truncate=True)
    if ops.null_count or not pc.all(pc.is_in(ops, value_set=_OPS)).as_py():
        raise ValueError(f"{parquet}: {OP_COLUMN} holds values other than I, U, D")
    if any(t[k].null_count for k in schema.primary_key):
        raise ValueError(f"{parquet}: a primary key column of {schema.table} is null")
    unique = _unique_keys(t, schema.primary_key)
    deletes = pc.sum(pc.equal(ops, "D")).as_py() or 0
    lists = t[UNCHANGED_COLUMN]
    names = set(pc.unique(pc.list_flatten(lists)).to_pylist()) if lists.null_count < len(lists) else set()
    keys = set(schema.primary_key)
    unchanged = tuple(c for c in schema.column_names if c in names and c not in keys)
    moves = FROM_SEQ_COLUMN in present
    return BatchInfo(
        rows=t.num_rows, unique_keys=unique, deletes=int(deletes), unchanged=unchanged, moves=moves
    )


def _unique_keys(t: pa.Table, key: tuple[str, ...]) -> bool:
    """Every key appears once. A single key column in strictly increasing order (a load, inserts of a
    serial key) proves it by one comparison of neighbours; otherwise the keys are grouped (hashing 100k
    keys costs 5-14 ms on the merge thread, the comparison 0.3 ms)."""
    if len(key) == 1 and t.num_rows > 1:
        column = t[key[0]].combine_chunks()
        if not pa.types.is_floating(column.type):  # NaN compares false: let grouping decide
            with contextlib.suppress(pa.ArrowNotImplementedError):  # a type without an order
                if pc.all(pc.greater(column.slice(1), column.slice(0, len(column) - 1))).as_py():
                    return True
    return bool(t.group_by(list(key)).aggregate([]).num_rows == t.num_rows)


@dataclass(frozen=True, slots=True)
class MergeContext:
    """What a merge hook sees, inside the merge transaction. ``staging`` holds one row per key (the last
    change, with ``_op``), or several per key when the batch had duplicates and was not reduced yet; hooks
    that need one row per key should use ``DISTINCT ON``/``ROW_NUMBER`` by ``_seq`` themselves."""

    manifest: Manifest
    schema: TableSchema
    staging: str
    dialect: Any
    execute: Callable[[str], None]
    query: Callable[[str], list[tuple[Any, ...]]]
    # Set when the merge copies the old image of every row it changes (target shape) into this temp table
    # (a hook's ``wants_old_images``, on warehouses that can): hooks read them there after the merge.
    old_images: str | None = None


class MergeHook(Protocol):
    """Work that must commit atomically with a merge (e.g. incremental view maintenance).

    ``before_merge`` runs after the batch is loaded and before the target changes (old images are still
    there); ``after_merge`` runs after the target changed and before the ledger row and the commit. An
    exception rolls the whole batch back.
    """

    def before_merge(self, ctx: MergeContext) -> None: ...

    def after_merge(self, ctx: MergeContext) -> None: ...


def _never(ctx: MergeContext) -> bool:
    return False


class RoundFailed(Exception):
    """A batch of ``table`` (None: the round's commit) failed in ``apply_round``: nothing of the round was
    committed; ``error`` is what failed."""

    def __init__(self, table: TableId | None, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.table = table
        self.error = error


class SqlWarehouse(abc.ABC):
    """``replicator.warehouses.base.Warehouse`` for engines that speak a ``Dialect``."""

    name: str
    dialect: Dialect

    # -- what a subclass provides ----------------------------------------------------------------------

    @abc.abstractmethod
    def _execute(self, sql: str) -> None: ...

    @abc.abstractmethod
    def _query(self, sql: str) -> list[tuple[Any, ...]]: ...

    # Transactions as plain SQL statements (PostgreSQL, Redshift); drivers with their own calls override.
    def _begin(self) -> None:
        self._execute("BEGIN")

    def _commit(self) -> None:
        self._execute("COMMIT")

    def _rollback(self) -> None:
        self._execute("ROLLBACK")

    @abc.abstractmethod
    def _load(self, schema: TableSchema, staging: str, parquet: Path, *, moves: bool) -> None:
        """Fill the (empty) staging table with the file's ``dialect.staging_columns(schema, moves=moves)``."""

    @abc.abstractmethod
    def close(self) -> None: ...

    hooks: tuple[MergeHook, ...] = ()
    # The merge can copy old images aside as it goes (``Dialect.merge(old_images=...)``): a hook with
    # ``wants_old_images(ctx) -> True`` then finds them in ``ctx.old_images``. Merges no hook asks about
    # keep the plain form.
    captures_old_images: bool = False

    def add_hook(self, hook: MergeHook) -> None:
        self.hooks = (*self.hooks, hook)

    options: Mapping[TableId, TableOptions] = MappingProxyType({})

    def configure(self, options: Mapping[TableId, TableOptions]) -> None:
        """Per-table options from schemas/ (deletes, dropped columns, policies, layout)."""
        self.options = dict(options)

    def _table_options(self, table: TableId) -> TableOptions:
        return self.options.get(table) or TableOptions()

    def _layout(self, schema: TableSchema, options: TableOptions) -> dict[str, Any]:
        """Physical layout keywords for ``Dialect.create_table`` (Redshift: DISTKEY, SORTKEY, ENCODE)."""
        return {}

    def record_table_error(self, table: TableId, reason: str) -> None:
        """Remember why ``table`` is stopped, so ``replicator status`` in another process can say it."""
        self._in_transaction(evolution.record_error(self.dialect, table, reason))

    def clear_table_error(self, table: TableId) -> None:
        self._in_transaction([evolution.clear_error(table)])

    def schema_errors(self) -> dict[TableId, str]:
        """Tables stopped by an incompatible schema change, with the reason (for ``replicator status``)."""
        return evolution.errors(self)

    def run_statements(self, statements: list[str]) -> None:
        """Run ``statements`` in one transaction, all or nothing (view DDL and refreshes)."""
        self._in_transaction(statements)

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a query run outside any merge (view state, status)."""
        return self._query(sql)

    # -- the contract ----------------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the state schema and tables if missing; drop staging tables a crashed run left behind."""
        self._in_transaction([*self.dialect.setup(), *evolution.setup(self.dialect)])
        leftovers = self._query(self.dialect.list_leftover_staging())
        self._in_transaction([self.dialect.drop_table(TableId(s, n)) for s, n in leftovers])

    def ensure_table(self, schema: TableSchema) -> None:
        """Create the target in the shape its batches will have (column policies applied), and record
        that shape for schema evolution unless one is recorded already."""
        opts = self._table_options(schema.table)
        schema = target_schema(schema, ColumnPolicies(dict(opts.policies)))
        create = self.dialect.create_table(schema, soft_delete=opts.soft_delete, **self._layout(schema, opts))
        self._in_transaction([*create, *evolution.record_if_missing(self, schema)])

    # Redshift serialises commits and each costs hundreds of milliseconds: the pipeline merges all tables
    # of a round in one transaction there (``apply_round``); elsewhere one transaction per batch.
    round_commits: bool = False
    _batch: Manifest | None = None  # the batch being loaded (``_load`` of a warehouse that needs its key)

    def apply(self, manifest: Manifest, schema: TableSchema, parquet: Path) -> ApplyResult:
        """Merge one staged batch and record it in the ledger, in one transaction (see ``Warehouse``)."""
        try:
            return self.apply_round([(manifest, schema, parquet)])[0]
        except RoundFailed as exc:
            raise exc.error from None

    def apply_round(self, batches: list[tuple[Manifest, TableSchema, Path]]) -> list[ApplyResult]:
        """Merge ``batches`` (each table's oldest first) and record each in the ledger, all in ONE
        transaction: one commit for the round. A batch already in the ledger is skipped. When one fails,
        nothing of the round commits and ``RoundFailed`` names its table (the caller retries without it).
        Column changes run first, each in its own transaction (Redshift's ALTER COLUMN TYPE would commit
        the merge)."""
        prepared = []
        for manifest, schema, parquet in batches:
            try:
                if manifest.table != schema.table:
                    raise ValueError(f"manifest of {manifest.table} with the schema of {schema.table}")
                info = inspect_batch(parquet, schema)
                opts = self._table_options(schema.table)
                nulls = evolution.evolve(self, schema, keep_dropped=opts.dropped_columns == "keep")
            except Exception as exc:  # this table's batch, not the round: the caller sets the table aside
                raise RoundFailed(manifest.table, exc) from exc
            prepared.append((manifest, schema, parquet, info, nulls))
        started = time.monotonic()
        results = []
        self._begin()
        try:
            for manifest, schema, parquet, info, nulls in prepared:
                try:
                    results.append(self._merge_batch(manifest, schema, parquet, info, nulls))
                except Exception as exc:
                    raise RoundFailed(schema.table, exc) from exc
            try:
                self._commit()
            except Exception as exc:
                raise RoundFailed(None, exc) from exc
        except BaseException:
            self._safe_rollback()
            raise
        finally:
            self._batch = None
        if len(results) == 1:  # the whole transaction, commit included
            results[0] = dataclasses.replace(results[0], seconds=time.monotonic() - started)
        return results

    def _merge_batch(
        self, manifest: Manifest, schema: TableSchema, parquet: Path, info: BatchInfo, nulls: tuple[str, ...]
    ) -> ApplyResult:
        """One batch's merge and ledger row, inside the open transaction."""
        started = time.monotonic()
        staging = STAGING_PREFIX + manifest.batch_id
        d = self.dialect
        opts = self._table_options(schema.table)
        if d.lock_target:
            self._execute(d.lock_target.format(table=quote_table(schema.table)))
        if self._query(d.ledger_lookup(manifest.batch_id)):
            return ApplyResult(manifest.batch_id, applied=False, seconds=time.monotonic() - started)
        if info.truncate:
            # DELETE, not TRUNCATE: it must commit with the ledger row (Redshift's TRUNCATE commits
            # implicitly). Merge hooks are not called: they see row changes only.
            self._execute(f"DELETE FROM {quote_table(schema.table)}")
            truncated = MergeContext(manifest, schema, "", d, self._execute, self._query)
            for hook in self.hooks:
                # Optional hook capability (views: recompute incremental views from the emptied table).
                after_truncate = getattr(hook, "after_truncate", None)
                if after_truncate is not None:
                    after_truncate(truncated)
            for statement in d.ledger_record(manifest):
                self._execute(statement)
            return ApplyResult(manifest.batch_id, applied=True, seconds=time.monotonic() - started)
        # A view over the file where the engine reads it, unless unsent values are filled in (an UPDATE).
        view = staging if d.reads_parquet and not (info.moves and info.unchanged) else None
        if view:
            self._execute(d.staging_view(schema, staging, str(parquet), moves=info.moves))
        else:
            self._execute(d.create_staging(schema, staging, moves=info.moves))
            self._batch = manifest
            self._load(schema, staging, parquet, moves=info.moves)
        if info.moves and info.unchanged:
            # Before the target changes: values a moved row did not send come from its old key's row.
            self._execute(d.fill_moved(schema, staging, info.unchanged))
        source, keys, deletes, reduced_view = staging, info.rows, info.deletes, False
        if not info.unique_keys:
            source = staging + "_r"
            reduced_view = self._reduce(schema, staging, source, parquet, info)
            [(keys, deletes)] = self._query(d.count_ops(source))
        ctx = MergeContext(manifest, schema, source, d, self._execute, self._query)
        if self.captures_old_images and any(
            getattr(hook, "wants_old_images", _never)(ctx) for hook in self.hooks
        ):
            ctx = dataclasses.replace(ctx, old_images=source + "_o")
            self._execute(d.create_old_images(schema.table, source + "_o"))
        for hook in self.hooks:
            hook.before_merge(ctx)
        self._merge_rows(
            schema,
            source,
            parquet,
            info,
            soft_delete=opts.soft_delete,
            nulls=nulls,
            old_images=ctx.old_images,
        )
        for hook in self.hooks:
            hook.after_merge(ctx)
        crash_point("mid_merge")
        for statement in d.ledger_record(manifest):
            self._execute(statement)
        if reduced_view:
            self._execute(d.drop_view(source))
        temps = {staging, *([] if reduced_view else [source]), *([ctx.old_images] if ctx.old_images else [])}
        for table in temps:  # temp tables, but a long-lived session should not keep them
            self._execute(d.drop_view(table) if table == view else d.drop_table(table))
        keys, deletes = int(keys or 0), int(deletes or 0)
        return ApplyResult(
            manifest.batch_id,
            applied=True,
            inserted=keys - deletes,
            deleted=deletes,
            seconds=time.monotonic() - started,
        )

    def _reduce(
        self, schema: TableSchema, staging: str, reduced: str, parquet: Path, info: BatchInfo
    ) -> bool:
        """Keep the last change per key of ``staging`` in ``reduced`` (``Dialect.reduce``: a table); True
        when an engine made ``reduced`` a view instead."""
        self._execute(self.dialect.reduce(schema, staging, reduced, moves=info.moves))
        return False

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
        """Apply the one-row-per-key ``source`` to the target (``Dialect.merge``), inside the merge
        transaction; an engine may do it in other statements with the same effect."""
        merge = self.dialect.merge(
            schema,
            source,
            unchanged=info.unchanged,
            soft_delete=soft_delete,
            nulls=nulls,
            old_images=old_images,
        )
        for statement in merge:
            self._execute(statement)

    def table_states(self) -> dict[TableId, TableState]:
        """Per table with at least one applied batch; empty before ``setup`` (read-only status checks)."""
        return read_table_states(self._query, self.dialect)

    # -- helpers ---------------------------------------------------------------------------------------

    def _in_transaction(self, statements: list[str]) -> None:
        self._begin()
        try:
            for statement in statements:
                self._execute(statement)
            self._commit()
        except BaseException:
            self._safe_rollback()
            raise

    def _safe_rollback(self) -> None:
        # The error that got us here is the one worth raising; a rollback on a broken connection fails too.
        with contextlib.suppress(Exception):
            self._rollback()


def read_table_states(
    query: Callable[[str], list[tuple[Any, ...]]], dialect: Dialect
) -> dict[TableId, TableState]:
    """``SqlWarehouse.table_states`` through any connection's ``query`` (the daemon's admin session)."""
    states: dict[TableId, TableState] = {}
    if not query(dialect.progress_exists()):
        return states
    for schema_name, name, through, batches, rows, commit_time, applied_at in query(dialect.table_states()):
        table = TableId(schema_name, name)
        states[table] = TableState(
            table=table,
            applied_through=Position(through) if through is not None else None,
            batches=int(batches),
            rows=int(rows),
            last_commit_time=commit_time,
            last_applied_at=applied_at,
        )
    return states
