"""Plain row messages straight into columns: the PostgreSQL source's hot path (issue 16).

A *plain* row message is an insert, an update without an old tuple, or a delete (old key or old row) whose
values are all text or NULL (no unchanged TOAST value, no binary). ``scan`` walks a run of pgoutput payloads
and appends each plain row of a table to that table's ``Sink``: its values as raw UTF-8 bytes, column by
column in schema order, its op (``I``/``U``/``D``) and its position (``<commit LSN>.<ordinal>``). It stops at
the first message it does not take, which the caller handles itself:

- anything that is not an insert, update or delete (Begin, Commit, Relation, Truncate, ...),
- a row of a relation without a sink in ``sinks``,
- a row whose sink was not ``begin``-ed for the transaction ``serial`` (the first row of a table in each
  transaction goes the caller's way: that is where it deduplicates resent rows and records the transaction),
- a row that is not plain or not well formed (the full decoder raises on it or builds a ``Change``).

It also stops right after a row that fills its sink (``limit`` rows or ``cap`` bytes of messages), returning
that sink. A sink that goes from empty to not empty is appended to ``touched``.

Two implementations with one contract: the compiled ``_rowscan`` (C, built by ``scripts/build_ext.sh``),
used when it imports, and the pure-Python ``PureSink``/``pure_scan`` below, the fallback (and what
``REPLICATOR_PURE_PYTHON=1`` forces). tests/sources/postgres/test_rowscan.py runs both on generated messages
and requires identical results. The compiled one does no work per value in Python: the columns come out as
Arrow buffers, checked for UTF-8 in bulk by Arrow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa

from replicator.model import COMMIT_TIME_COLUMN, OP_COLUMN, POSITION_COLUMN, ChangeChunk, TableId, TableSchema

if TYPE_CHECKING:
    from replicator.sources.postgres.rows import Rel

_TS = pa.timestamp("us", tz="UTC")
_MAX_ORDINAL = 0xFFFFFFFFFFFF  # 12 hex digits

Buffers = tuple[bytes, bytes, bytes | None, int]  # data, int32 offsets, validity bits or None, null count


class PureSink:
    """One table's plain rows, collected column-wise (the pure-Python twin of ``_rowscan.Sink``).

    ``index``: schema column i <- tuple value ``index[i]`` (-1: NULL), or None when the tuple is in schema
    order; ``width``: the values a tuple of the relation carries."""

    __slots__ = ("_index", "_ops", "_positions", "_prefix", "_values", "columns", "nbytes", "serial", "width")

    def __init__(self, index: Sequence[int] | None, width: int) -> None:
        if not 0 <= width <= 0xFFFF:
            raise ValueError("width out of range")
        if index is not None and any(not -1 <= j < width for j in index):
            raise ValueError("index entry out of range")
        self.width = width
        self._index = list(index) if index is not None else None
        self.columns = len(self._index) if self._index is not None else width
        self._values: list[list[bytes | None]] = []
        self._ops: list[str] = []
        self._positions: list[str] = []
        self._prefix: str | None = None
        self.serial = -1
        self.nbytes = 0

    @property
    def rows(self) -> int:
        return len(self._positions)

    def begin(self, serial: int, prefix: str) -> None:
        """``scan`` appends rows of the transaction numbered ``serial``, positioned ``prefix`` + ordinal."""
        if len(prefix) != 17:
            raise ValueError("prefix must be 16 hex digits and a dot")
        self.serial, self._prefix = serial, prefix

    def add(self, payload: bytes, prefix: str, ordinal: int) -> bool:
        """Append ``payload`` as the row at ``prefix`` + ``ordinal`` if it is a plain row message; False
        (nothing appended) if it is not, or is malformed."""
        if len(prefix) != 17:
            raise ValueError("prefix must be 16 hex digits and a dot")
        if not 0 <= ordinal <= _MAX_ORDINAL:
            raise OverflowError("ordinal does not fit 12 hex digits")
        values = _plain(payload, self.width)
        if values is None:
            return False
        self._append(payload, values, prefix, ordinal)
        return True

    def _append(self, payload: bytes, values: list[bytes | None], prefix: str, ordinal: int) -> None:
        index = self._index
        self._values.append(values if index is None else [values[j] if j >= 0 else None for j in index])
        self._ops.append(_OPS[payload[0]])
        self._positions.append(f"{prefix}{ordinal:012X}")
        self.nbytes += len(payload)

    def position(self, i: int) -> str:
        return self._positions[i]

    def arrays(self) -> list[pa.Array]:
        """The rows as Arrow string arrays (schema columns, ops, positions); then empty (also when it
        raises ``pa.ArrowInvalid`` because a value is not UTF-8, as the compiled sink does)."""
        try:
            columns = [pa.array(c, pa.binary()).cast(pa.string()) for c in zip(*self._values, strict=True)]
            if not self._values:
                columns = [pa.array([], pa.string()) for _ in range(self.columns)]
            columns.append(pa.array(self._ops, pa.string()))
            columns.append(pa.array(self._positions, pa.string()))
        finally:
            self._values, self._ops, self._positions = [], [], []
            self.serial, self._prefix, self.nbytes = -1, None, 0
        return columns


def _plain(data: bytes, width: int) -> list[bytes | None] | None:
    """A plain row message's values (raw bytes, None for NULL), or None if it is not plain or malformed.

    The hot path of the fallback: a value running past the end shows as a position past it at the end (a
    slice never raises), a kind byte past it as an IndexError."""
    n = len(data)
    if n < 8:
        return None
    tag, flag = data[0], data[5]
    if not ((tag in (73, 85) and flag == 78) or (tag == 68 and flag in (75, 79))):
        return None
    if ((data[6] << 8) | data[7]) != width:
        return None
    pos = 8
    out: list[bytes | None] = []
    append = out.append
    from_bytes = int.from_bytes
    try:
        for _ in range(width):
            kind = data[pos]
            if kind == 116:  # 't'
                end = pos + 5 + from_bytes(data[pos + 1 : pos + 5])
                append(data[pos + 5 : end])
                pos = end
            elif kind == 110:  # 'n'
                append(None)
                pos += 1
            else:  # 'u' unchanged TOAST, 'b' binary, or garbage: the full decoder's business
                return None
    except IndexError:
        return None
    return out if pos <= n else None


_OPS = {73: "I", 85: "U", 68: "D"}


def pure_scan(  # noqa: PLR0917 - positional, as the compiled twin's
    run: list[bytes],
    i: int,
    sinks: dict[int, PureSink],
    ordinal: int,
    serial: int,
    touched: list[PureSink],
    limit: int,
    cap: int,
) -> tuple[int, int, PureSink | None]:
    """See the module docstring: (index of the first message not taken, the ordinal after the rows taken,
    the sink a row filled or None)."""
    n = len(run)
    i = max(i, 0)
    plain, ops, from_bytes = _plain, _OPS, int.from_bytes
    while i < n:
        data = run[i]
        if type(data) is not bytes or len(data) < 6 or (op := ops.get(data[0])) is None:
            break
        sink = sinks.get(from_bytes(data[1:5]))
        if sink is None or sink.serial != serial or (prefix := sink._prefix) is None:
            break
        values = plain(data, sink.width)
        if values is None:
            break
        if ordinal >= _MAX_ORDINAL:
            raise OverflowError("ordinal does not fit 12 hex digits")
        ordinal += 1
        positions = sink._positions
        if not positions:
            touched.append(sink)
        index = sink._index
        sink._values.append(values if index is None else [values[j] if j >= 0 else None for j in index])
        sink._ops.append(op)
        positions.append(f"{prefix}{ordinal:012X}")
        sink.nbytes += len(data)
        i += 1
        if len(positions) >= limit or sink.nbytes >= cap:
            return i, ordinal, sink
    return i, ordinal, None


class SinkLike(Protocol):
    """What ``Rows`` needs of a sink (``PureSink`` and ``_rowscan.Sink`` both have it)."""

    @property
    def rows(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def serial(self) -> int: ...
    @property
    def columns(self) -> int: ...
    def begin(self, serial: int, prefix: str) -> None: ...
    def add(self, payload: bytes, prefix: str, ordinal: int) -> bool: ...
    def position(self, i: int) -> str: ...


def _compiled_module() -> object | None:
    if os.environ.get("REPLICATOR_PURE_PYTHON"):
        return None
    try:
        from replicator.sources.postgres import _rowscan
    except ImportError:
        return None
    return _rowscan


compiled = _compiled_module()
COMPILED = compiled is not None


def _string_array(n: int, buffers: Buffers) -> pa.Array:
    data, offsets, valid, nulls = buffers
    validity = pa.py_buffer(valid) if valid is not None else None
    return pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)], nulls)


class Txn(Protocol):
    """What the collector needs of a transaction (the source's own record of it)."""

    commit_time: datetime
    last: dict[TableId, str]


class Rows:
    """One table's collected plain rows: a sink (compiled when available) shaped like ``rel``, and the
    transactions its rows belong to (``starts``: ``(first row index, transaction)``; ``txn``: the last)."""

    __slots__ = ("pure", "rel", "sink", "starts", "table", "txn")

    def __init__(self, table: TableId, rel: Rel, *, pure: bool = not COMPILED) -> None:
        self.table = table
        self.pure = pure
        self.starts: list[tuple[int, Txn]] = []
        self.txn: Txn | None = None
        self.rel = rel
        self.sink: SinkLike = self._new_sink(rel)

    def _new_sink(self, rel: Rel) -> SinkLike:
        width = len(rel.names)
        if self.pure or compiled is None:
            return PureSink(rel.index, width)
        sink: SinkLike = compiled.Sink(rel.index, width)  # type: ignore[attr-defined]
        return sink

    def reshape(self, rel: Rel) -> None:
        """Collect rows shaped like ``rel`` from now on (only when empty: the caller flushes first)."""
        if self.sink.rows:
            raise RuntimeError(f"{self.table}: reshaped with rows collected")
        self.rel, self.sink = rel, self._new_sink(rel)

    @property
    def last(self) -> str:
        """The last collected row's position ("" when empty)."""
        return self.sink.position(-1) if self.sink.rows else ""

    def take(self, schema: TableSchema) -> ChangeChunk | None:
        """The rows collected so far as one chunk of ``schema`` (``None`` when there are none); then empty.

        Raises ``pa.ArrowInvalid`` if a value is not UTF-8 (the wire text of a UTF8 database always is)."""
        sink = self.sink
        n = sink.rows
        if not n:
            return None
        if sink.columns != len(schema.columns):
            raise ValueError(
                f"{self.table}: rows have {sink.columns} values, the schema {len(schema.columns)}"
            )
        if isinstance(sink, PureSink):
            columns = sink.arrays()
        else:
            buffers: list[Buffers] = sink.take()  # type: ignore[attr-defined]
            columns = [_string_array(n, b) for b in buffers]
            for column in columns[:-2]:
                column.validate(full=True)  # UTF-8 (ops and positions are ours)
        bounds = [i for i, _ in self.starts[1:]] + [n]
        times = [
            pa.repeat(pa.scalar(t.commit_time, _TS), end - i)
            for (i, t), end in zip(self.starts, bounds, strict=True)
        ]
        columns.append(times[0] if len(times) == 1 else pa.concat_arrays(times))
        names = [*schema.column_names, OP_COLUMN, POSITION_COLUMN, COMMIT_TIME_COLUMN]
        self.starts, self.txn = [], None
        return ChangeChunk(self.table, schema, pa.Table.from_arrays(columns, names=names))


scan: Callable[..., tuple[int, int, SinkLike | None]] = (
    compiled.scan if compiled is not None else pure_scan  # type: ignore[attr-defined]
)
"""``scan`` of the module docstring: the compiled scanner when it is there (its sinks are ``Rows``' sinks)."""
