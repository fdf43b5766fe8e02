"""Rows of one table collected column-wise while pgoutput streams, handed on as ``ChangeChunk``s.

The PostgreSQL source appends each plain row (insert, update without an old tuple, delete) here instead of
building a ``Change``; the pipeline's buffer and stage then keep the rows columnar. Values stay raw UTF-8
bytes until ``take``, which checks and converts them to Arrow strings in bulk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import pyarrow as pa

from replicator.model import (
    COMMIT_TIME_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    ChangeChunk,
    TableId,
    TableSchema,
)

_TS = pa.timestamp("us", tz="UTC")


class Txn(Protocol):
    """What a collector needs of a transaction (the source's own record of it)."""

    commit_time: datetime
    last: dict[TableId, str]  # the last position of each table's changes in it


class RowCollector:
    """One table's rows in arrival order. The source appends to the lists directly (the hot path):

    ``rows`` (values in schema order, raw bytes or ``None``), ``ops`` (``I``/``U``/``D``), ``positions``
    (``Position.value``, rising) and, when the transaction changes, ``starts`` gets ``(row index,
    transaction)`` with ``txn`` set to the new transaction. ``bytes`` sums the rows' message sizes (which
    hold their values): the source hands the rows on before they reach its byte cap, so a few huge values
    cannot pile up here the way a row cap alone would let them (10,000 rows of 1 MB are 10 GB)."""

    __slots__ = ("bytes", "ops", "positions", "rows", "starts", "table", "txn")

    def __init__(self, table: TableId) -> None:
        self.table = table
        self.rows: list[Sequence[bytes | None]] = []
        self.ops: list[str] = []
        self.positions: list[str] = []
        self.starts: list[tuple[int, Txn]] = []
        self.txn: Txn | None = None
        self.bytes = 0

    def take(self, schema: TableSchema) -> ChangeChunk | None:
        """The rows collected so far as one chunk of ``schema`` (``None`` when there are none); then empty.

        Raises ``pa.ArrowInvalid`` if a value is not UTF-8 (the wire text of a UTF8 database always is)."""
        rows = self.rows
        if not rows:
            return None
        n = len(rows)
        columns: list[pa.Array] = [
            pa.array(c, pa.binary()).cast(pa.string()) for c in zip(*rows, strict=True)
        ]
        if len(columns) != len(schema.columns):
            raise ValueError(
                f"{self.table}: rows have {len(columns)} values, the schema {len(schema.columns)}"
            )
        columns.append(pa.array(self.ops, pa.string()))
        columns.append(pa.array(self.positions, pa.string()))
        bounds = [i for i, _ in self.starts[1:]] + [n]
        times = [
            pa.repeat(pa.scalar(t.commit_time, _TS), end - i)
            for (i, t), end in zip(self.starts, bounds, strict=True)
        ]
        columns.append(times[0] if len(times) == 1 else pa.concat_arrays(times))
        names = [*schema.column_names, OP_COLUMN, POSITION_COLUMN, COMMIT_TIME_COLUMN]
        chunk = ChangeChunk(self.table, schema, pa.Table.from_arrays(columns, names=names))
        self.rows, self.ops, self.positions, self.starts, self.txn = [], [], [], [], None
        self.bytes = 0
        return chunk
