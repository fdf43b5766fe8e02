"""The data model every stage speaks: tables, schemas, changes, positions and batches.

Everything here is immutable. A ``Change`` carries its values as *wire text* (what DMS CSV and pgoutput's
text format deliver) aligned with the columns of the table schema; the stage turns whole columns of text
into typed Arrow arrays at once, which is several times faster than building typed Python objects per value.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from replicator.values import LogicalType, parse_type


class Op(enum.Enum):
    """What a change does to its row. The value is the one-letter code used in staged Parquet (and DMS)."""

    INSERT = "I"
    UPDATE = "U"
    DELETE = "D"
    TRUNCATE = "T"  # empties the table; always a batch of its own (values are empty)


@dataclass(frozen=True, slots=True, order=True)
class TableId:
    """A table's identity at the source: ``schema.name``. Used unchanged as the target's name."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @classmethod
    def parse(cls, text: str) -> TableId:
        """``"dbo.payments"`` -> TableId("dbo", "payments"). A name without a dot is refused."""
        schema, dot, name = text.partition(".")
        if not dot or not schema or not name:
            raise ValueError(f"table name {text!r} must have the form schema.table")
        return cls(schema, name)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: LogicalType
    nullable: bool = True
    # Wire text of the value the rows that existed before the column was added hold at the source, when it
    # was added with one and no row was sent for it (PostgreSQL's ADD COLUMN ... DEFAULT, which rewrites
    # nothing): the target's existing rows are given it when the column is added there.
    default: str | None = None

    @classmethod
    def of(cls, name: str, type_text: str, *, nullable: bool = True) -> Column:
        return cls(name, parse_type(type_text), nullable)


@dataclass(frozen=True, slots=True)
class TableSchema:
    """Columns in source order and the primary key (column names, in key order)."""

    table: TableId
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.table}: duplicate column names")
        missing = [k for k in self.primary_key if k not in names]
        if missing:
            raise ValueError(f"{self.table}: primary key column(s) {missing} are not columns of the table")
        if any(n.startswith("_") and n in METADATA_COLUMNS for n in names):
            raise ValueError(f"{self.table}: column names {sorted(METADATA_COLUMNS)} are reserved")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.table} has no column {name!r}")


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A point in a source's change stream.

    ``value`` is an encoding chosen by the source whose plain string order (code point by code point) is the
    source order, so positions from one source compare correctly anywhere, and round-trip through JSON,
    Parquet and SQL as text. Sources build them with their own helpers (e.g. ``lsn_position``).
    """

    value: str

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Change:
    """One row change.

    ``values`` are wire text (or None for SQL NULL) aligned with the table schema's columns. For a delete
    they hold the old image (at least the key). ``unchanged`` names columns whose value the source did not
    send (PostgreSQL's unchanged TOAST values): they keep the row's current value, never NULL.

    ``prior`` is set on an UPDATE that changed the primary key: the row's image before the change, in schema
    column order (the key columns at least; with PostgreSQL's default replica identity the other columns
    are None: not sent). The row under the prior key goes away and the row under the new key is upserted,
    and its ``unchanged`` columns take their values from the row it was, not from the new key (which
    usually has no row yet). One change, not a delete plus an update, so no batch cut can separate them.
    """

    table: TableId
    op: Op
    values: tuple[str | None, ...]
    position: Position
    commit_time: datetime | None = None
    unchanged: frozenset[str] = field(default_factory=frozenset)
    prior: tuple[str | None, ...] | None = None


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """The source's table now has ``schema`` (columns added, widened, dropped), effective from ``position``.

    Sources yield it in the change stream before the first change that uses the new shape. The buffer cuts
    the table's pending batch there, so every batch holds one shape; the manifest records that shape, and the
    merge evolves the target before applying a batch whose shape differs.
    """

    table: TableId
    schema: TableSchema
    position: Position


@dataclass(frozen=True, slots=True)
class ChangeChunk:
    """Consecutive changes of one table as Arrow columns: what columnar sources (DMS files) yield.

    ``data`` holds the schema's columns by name as wire text (``string``, null for SQL NULL), then
    ``_op`` (``I``/``U``/``D``, never ``T``), ``_pos`` (``Position.value``, strictly increasing) and
    ``_commit_time`` (timestamp us UTC, may be null). A chunk means exactly the changes ``change(i)`` gives,
    in order, without unchanged columns; it is never empty. The buffer and stage keep it columnar.
    """

    table: TableId
    schema: TableSchema
    data: pa.Table

    def __len__(self) -> int:
        return int(self.data.num_rows)

    @property
    def first(self) -> Position:
        return Position(self.data.column(POSITION_COLUMN)[0].as_py())

    @property
    def last(self) -> Position:
        return Position(self.data.column(POSITION_COLUMN)[-1].as_py())

    def change(self, i: int) -> Change:
        """Row ``i`` as a ``Change`` (slow; for fallbacks, policies and quarantine notes)."""
        row = self.data.slice(i, 1).to_pylist()[0]
        values = tuple(row.get(c.name) for c in self.schema.columns)
        return Change(self.table, Op(row[OP_COLUMN]), values, Position(row[POSITION_COLUMN]),
                      row[COMMIT_TIME_COLUMN])  # fmt: skip

    def changes(self) -> Iterator[Change]:
        return (self.change(i) for i in range(len(self)))


def batch_id(table: TableId, first: Position, last: Position) -> str:
    """Deterministic id of the batch holding ``table``'s changes from ``first`` through ``last``.

    Re-staging the same range after a crash gives the same id, so the ledger recognises it.
    """
    digest = hashlib.sha256(f"{table}\x00{first.value}\x00{last.value}".encode()).hexdigest()
    return digest[:32]


@dataclass(frozen=True, slots=True)
class Batch:
    """A run of consecutive changes of one table, in source order, as cut by the buffer."""

    table: TableId
    schema: TableSchema
    changes: Sequence[Change]

    def __post_init__(self) -> None:
        if not self.changes:
            raise ValueError("a batch holds at least one change")

    @property
    def first(self) -> Position:
        return self.changes[0].position

    @property
    def last(self) -> Position:
        return self.changes[-1].position

    @property
    def id(self) -> str:
        return batch_id(self.table, self.first, self.last)


# Columns the stage adds to every staged Parquet file, after the table's own columns.
OP_COLUMN = "_op"  # 'I' | 'U' | 'D'
SEQ_COLUMN = "_seq"  # int64, order of the change within its batch (source order)
POSITION_COLUMN = "_pos"  # the change's Position.value
COMMIT_TIME_COLUMN = "_commit_time"  # timestamp (UTC) of the source commit, may be null
UNCHANGED_COLUMN = "_unchanged"  # list<string> of columns whose value was not sent, null when none
# int64, only in files of batches with primary-key changes: the ``_seq`` of a row of the same file whose key
# names the target row that this row's ``_unchanged`` columns come from (null: the row's own key). See
# ``replicator.stage.resolve_unchanged``; the merge fills them from the target before it changes anything.
FROM_SEQ_COLUMN = "_from_seq"
METADATA_COLUMNS = frozenset(
    {OP_COLUMN, SEQ_COLUMN, POSITION_COLUMN, COMMIT_TIME_COLUMN, UNCHANGED_COLUMN, FROM_SEQ_COLUMN}
)
# Columns the merge adds to the target tables configured with deletes = "soft" (``schema.catalog`` refuses a
# source column with either name on such a table).
SOFT_DELETED = "_deleted"
SOFT_DELETED_AT = "_deleted_at"


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the stage wrote for one batch; stored as JSON beside the Parquet file, written after it.

    A batch exists in the staging store only once its manifest does, so a crash between writing the Parquet
    file and the manifest leaves nothing the merge would pick up.
    """

    table: TableId
    batch_id: str
    first: Position
    last: Position
    rows: int
    inserts: int
    updates: int
    deletes: int
    bytes: int
    data_key: str  # key of the Parquet file in the staging store
    # (name, logical type[, default]) of the table columns in the file, in order (``Column.default``)
    columns: tuple[tuple[str, ...], ...]
    primary_key: tuple[str, ...]
    min_commit_time: datetime | None
    max_commit_time: datetime | None
    staged_at: datetime

    def schema(self) -> TableSchema:
        """The table's shape as staged in this batch (which may be newer than the catalog's)."""
        from replicator.values import parse_type

        columns = tuple(
            Column(c[0], parse_type(c[1]), c[0] not in self.primary_key, c[2] if len(c) > 2 else None)
            for c in self.columns
        )
        return TableSchema(self.table, columns, self.primary_key)
