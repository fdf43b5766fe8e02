"""Per-table batching: changes accumulate per table and a batch is cut on rows, bytes or age.

The buffer also drops changes it has already seen: after a restart a source re-yields everything after its
last acknowledged position, and some of that may already be staged (a crash between stage and ack).
Dropping by position keeps every change staged exactly once.

Changes arrive one by one (``add``) or as columnar chunks (``add_chunk``); a chunk stays columnar: it is
filtered and sliced with Arrow, never turned into ``Change`` objects. A batch holding any chunk carries its
changes as ``ChunkedChanges`` (a lazy sequence the stage reads column-wise).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

import pyarrow as pa
import pyarrow.compute as pc

from replicator.model import (
    POSITION_COLUMN,
    Batch,
    Change,
    ChangeChunk,
    Op,
    Position,
    SchemaChange,
    TableId,
    TableSchema,
)

# Rough per-change overhead on top of the value text, so many tiny rows still hit max_bytes sensibly.
_ROW_OVERHEAD = 48
# Row sizes are measured on one change in this many and assumed alike in between: summing every row's
# value lengths was a large share of the per-row cost. Byte cuts are a memory bound, not an exact size.
_SAMPLE_EVERY = 64

Part = Change | ChangeChunk


class ChunkedChanges(Sequence[Change]):
    """The changes of a batch held as rows and chunks, in order; ``Change`` objects only on demand."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self.parts = tuple(parts)
        self._ends: list[int] = []
        total = 0
        for p in self.parts:
            total += len(p) if isinstance(p, ChangeChunk) else 1
            self._ends.append(total)

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    @overload
    def __getitem__(self, i: int) -> Change: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Change]: ...
    def __getitem__(self, i: int | slice) -> Change | Sequence[Change]:
        if isinstance(i, slice):
            return list(self)[i]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        lo, hi = 0, len(self._ends)
        while lo < hi:  # first part whose end is past i
            mid = (lo + hi) // 2
            if self._ends[mid] > i:
                hi = mid
            else:
                lo = mid + 1
        part = self.parts[lo]
        start = self._ends[lo - 1] if lo else 0
        return part.change(i - start) if isinstance(part, ChangeChunk) else part

    def __iter__(self) -> Iterator[Change]:
        for p in self.parts:
            if isinstance(p, ChangeChunk):
                yield from p.changes()
            else:
                yield p


@dataclass(slots=True)
class _Pending:
    parts: list[Part] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    started: float = 0.0
    row_bytes: int = _ROW_OVERHEAD  # the last sampled row size
    before: Position | None = None  # seen_through when the first change arrived
    chunked: bool = False


class Buffer:
    def __init__(
        self,
        schemas: Mapping[TableId, TableSchema],
        *,
        max_rows: int,
        max_bytes: int,
        max_age_seconds: float,
        seen_through: Mapping[TableId, Position] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.schemas = dict(schemas)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_age = max_age_seconds
        self.clock = clock
        self.seen_through: dict[TableId, Position] = dict(seen_through or {})
        self._pending: dict[TableId, _Pending] = {}
        # seen_through before each batch handed out by the latest call (so ``rewind`` can return there)
        self._cut_from: dict[str, Position | None] = {}
        self.dropped = 0
        self.dropped_through: Position | None = None  # the last change dropped (already staged)

    def add(self, change: Change) -> list[Batch]:
        """Take one change; return the batches it completes (usually none).

        A TRUNCATE is a batch of its own: what came before it is cut first, so the merge applies the
        truncate exactly between the changes that surround it at the source.
        """
        self._cut_from.clear()
        table = change.table
        seen = self.seen_through.get(table)
        if seen is not None and change.position.value <= seen.value:
            self.dropped += 1
            self.dropped_through = change.position
            return []
        self.seen_through[table] = change.position
        if change.op is Op.TRUNCATE:
            done = [self._cut(table)] if table in self._pending else []
            alone = Batch(table, self.schemas[table], [change])
            self._cut_from[alone.id] = seen
            return [*done, alone]
        p = self._pending.get(table)
        if p is None:
            p = self._pending[table] = _Pending(started=self.clock(), before=seen)
        if p.rows % _SAMPLE_EVERY == 0:
            p.row_bytes = _ROW_OVERHEAD + sum(len(v) for v in change.values if v is not None)
        p.parts.append(change)
        p.rows += 1
        p.bytes += p.row_bytes
        if p.rows >= self.max_rows or p.bytes >= self.max_bytes:
            return [self._cut(table)]
        return []

    def add_chunk(self, chunk: ChangeChunk) -> list[Batch]:
        """Take a chunk of changes; return the batches it completes. Rows already seen are dropped and the
        rest is sliced into batches by the same row and byte limits as ``add``."""
        self._cut_from.clear()
        table = chunk.table
        data = chunk.data
        seen = self.seen_through.get(table)
        if seen is not None and data.num_rows and chunk.first.value <= seen.value:
            keep = pc.greater(data.column(POSITION_COLUMN), pa.scalar(seen.value, pa.string()))
            kept = data.filter(keep)
            gone = data.num_rows - kept.num_rows
            if gone:
                self.dropped += gone
                self.dropped_through = Position(data.column(POSITION_COLUMN)[gone - 1].as_py())
            data = kept
        if data.num_rows == 0:
            return []
        self.seen_through[table] = Position(data.column(POSITION_COLUMN)[-1].as_py())
        row_bytes = _ROW_OVERHEAD + max(1, data.nbytes // data.num_rows)
        done: list[Batch] = []
        offset = 0
        while offset < data.num_rows:
            p = self._pending.get(table)
            if p is None:
                before = seen if offset == 0 else Position(data.column(POSITION_COLUMN)[offset - 1].as_py())
                p = self._pending[table] = _Pending(started=self.clock(), before=before)
            room = min(self.max_rows - p.rows, -(-(self.max_bytes - p.bytes) // row_bytes))
            take = max(1, min(data.num_rows - offset, room))
            p.parts.append(ChangeChunk(table, chunk.schema, data.slice(offset, take)))
            p.chunked = True
            p.rows += take
            p.bytes += take * row_bytes
            offset += take
            if p.rows >= self.max_rows or p.bytes >= self.max_bytes:
                done.append(self._cut(table))
        return done

    def set_schema(self, change: SchemaChange) -> list[Batch]:
        """The table's shape changes: cut what was collected under the old shape, then use the new one."""
        self._cut_from.clear()
        done = [self._cut(change.table)] if change.table in self._pending else []
        self.schemas[change.table] = change.schema
        return done

    def due(self) -> list[Batch]:
        """Batches whose oldest change has waited ``max_age_seconds``."""
        now = self.clock()
        self._cut_from.clear()
        return [self._cut(t) for t, p in list(self._pending.items()) if now - p.started >= self.max_age]

    def drain(self) -> list[Batch]:
        """Every pending batch, whatever its size or age."""
        self._cut_from.clear()
        return [self._cut(t) for t in list(self._pending)]

    def pending_rows(self) -> int:
        return sum(p.rows for p in self._pending.values())

    def rewind(self, batch: Batch) -> None:
        """``batch`` (handed out by the latest call) was not staged because its table stopped: forget it
        and everything after it of its table, so those changes are taken again when the source yields them
        again."""
        self._pending.pop(batch.table, None)
        before = self._cut_from.pop(batch.id, None)
        if before is None:
            self.seen_through.pop(batch.table, None)
        else:
            self.seen_through[batch.table] = before

    def _cut(self, table: TableId) -> Batch:
        p = self._pending.pop(table)
        if p.chunked:
            batch = Batch(table, self.schemas[table], ChunkedChanges(p.parts))
        else:
            changes: list[Change] = p.parts  # type: ignore[assignment]  # no chunk among them
            batch = Batch(table, self.schemas[table], changes)
        self._cut_from[batch.id] = p.before
        return batch
