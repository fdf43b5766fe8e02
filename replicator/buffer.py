"""Per-table batching: changes accumulate per table and a batch is cut on rows, bytes or age.

The buffer also drops changes it has already seen: after a restart a source re-yields everything after its
last acknowledged position, and some of that may already be staged (a crash between stage and ack).
Dropping by position keeps every change staged exactly once.

Changes arrive one by one (``add``) or as columnar chunks (``add_chunk``); a chunk stays columnar: it is
filtered and sliced with Arrow, never turned into ``Change`` objects. A batch holding any chunk carries its
changes as ``ChunkedChanges`` (a lazy sequence the stage reads column-wise).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from sys import getsizeof
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

# Byte cuts are a memory bound, so a batch's bytes are what its values cost in memory, staging included.
# Every change's values are counted (a sample once missed the few huge values among many small ones: 1 MB
# rows were counted as the small rows around them), and a batch is cut before the change or chunk row that
# would take it past max_bytes. A ``Change`` holds its values as Python strings (1, 2 or 4 bytes a character
# plus a header: ``sys.getsizeof``), which staging copies into Arrow as UTF-8 (1 to 4 bytes a character):
# each value counts the larger of the two (its characters alone made a 500k-character CJK value count 500 kB
# where it holds 1 MB in Python and 1.5 MB in Arrow), so staging a batch of changes holds up to twice its
# count at once, plus the Parquet writer's 8 MB row groups. A chunk's values are Arrow already, and staging
# does not copy them: its buffers are counted. Two cases cost more, and count it:
# - A change that leaves columns unsent gets their values from an earlier change of its key in the batch
#   (``resolve_unchanged``): those values are staged twice, so it counts the earlier change's bytes again
#   (once per key: only a key's last row keeps them). Changes of at least ``_FILL_SOURCE`` bytes are kept
#   by key for this; a key per smaller change would cost more than it bounds. (Updates leaving a TOASTed
#   300 kB-1 MB value unsent after an update of their row that carried it made 64 MB batches stage ~190 MB
#   of Arrow text.)
# - A batch that mixes chunks with changes the stage must resolve (unchanged columns, key changes) is staged
#   row by row: its chunks' rows become ``Change`` objects (a Python copy of their values), then Arrow text
#   again, so there a chunk counts three times its buffers (such batches, at the turn from full-row updates
#   to updates leaving TOASTed values unsent, held ~230 MB of Arrow memory at once for a 64 MB limit).
# Per change or row, a fixed overhead on top, so many tiny rows still hit max_bytes sensibly; tiny rows
# cost more than this in Python objects; max_rows bounds those.
_ROW_OVERHEAD = 48
_ASCII_HEADER = getsizeof("")  # an ASCII string's size beyond its length (what ``values_bytes`` tells by)
_NULL = getsizeof(None)
_TRUNCATE = Op.TRUNCATE  # a module constant: ``Op.TRUNCATE`` is an enum class lookup on every change
_ROWWISE_CHUNK = 3  # what a chunk's bytes count in a batch staged row by row (see above)
_FILL_SOURCE = 16 * 1024  # a change this large is kept by key, as what a later change may be filled with

Part = Change | ChangeChunk


def values_bytes(values: Sequence[str | None]) -> int:
    """What values cost in memory: as Python strings or as their UTF-8 copy in Arrow, the larger."""
    held = sum(map(getsizeof, values))
    text = sum(map(len, filter(None, values)))
    nulls = values.count(None)
    if held != text + _ASCII_HEADER * (len(values) - nulls) + _NULL * nulls:
        # Some value is not ASCII (its length in characters is not its size in bytes): count its UTF-8.
        text = sum(len(v.encode("utf-8", "surrogatepass")) for v in values if v)
    return max(held, text)


def change_bytes(change: Change) -> int:
    """What a change costs in memory, for byte limits: its values (the prior image of a key change too,
    ``values_bytes``) plus a fixed overhead."""
    size = _ROW_OVERHEAD + values_bytes(change.values)
    if change.prior is not None:
        size += values_bytes(change.prior)
    return size


def chunk_bytes(chunk: ChangeChunk) -> int:
    """What a chunk holds in memory, for byte limits: its Arrow buffers plus the same per-row overhead."""
    return int(chunk.data.nbytes) + len(chunk) * _ROW_OVERHEAD


def _row_ends(data: pa.Table) -> list[int]:
    """Running bytes of a chunk's rows: each row's text (value lengths) and its equal share of the rest
    (offsets, validity, op, timestamp). Computed in bulk, only for a chunk a byte cut falls inside."""
    n = data.num_rows
    text: pa.Array = pa.repeat(pa.scalar(0, pa.int64()), n)
    for column in data.columns:
        if pa.types.is_string(column.type) or pa.types.is_binary(column.type):
            text = pc.add(text, pc.fill_null(pc.binary_length(column), 0).cast(pa.int64()))
    fixed = max(0, int(data.nbytes) - (pc.sum(text).as_py() or 0)) // n + _ROW_OVERHEAD
    ends: list[int] = pc.cumulative_sum(pc.add(text, fixed)).to_pylist()
    return ends


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
    before: Position | None = None  # seen_through when the first change arrived
    chunked: bool = False
    rowwise: bool = False  # holds a change the stage must resolve (``_resolved``): staged row by row
    chunk_bytes: int = 0  # what its chunks' buffers hold (counted once each so far)
    # Per key, the bytes of its last change of at least ``_FILL_SOURCE`` bytes: what a later change of the
    # key that leaves columns unsent is filled with (0 once counted). None until there is one.
    large: dict[tuple[str | None, ...], int] | None = None

    def chunk_factor(self) -> int:
        """What a chunk's bytes count in this batch (``_ROWWISE_CHUNK`` when staged row by row)."""
        return _ROWWISE_CHUNK if self.rowwise else 1


def _resolved(change: Change) -> bool:
    """The stage resolves this change row by row (its unchanged columns, or a key change's prior image)."""
    return bool(change.unchanged) or change.prior is not None


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
        if self._cut_from:
            self._cut_from.clear()
        table = change.table
        seen = self.seen_through.get(table)
        if seen is not None and change.position.value <= seen.value:
            self.dropped += 1
            self.dropped_through = change.position
            return []
        self.seen_through[table] = change.position
        if change.op is _TRUNCATE:
            done = [self._cut(table)] if table in self._pending else []
            alone = Batch(table, self.schemas[table], [change])
            self._cut_from[alone.id] = seen
            return [*done, alone]
        own = size = change_bytes(change)
        p = self._pending.get(table)
        if p is None:
            return self._start(table, change, own, seen)
        if p.chunked or p.large is not None:
            size += self._staged_again(p, table, change)
        if p.bytes + size > self.max_bytes:
            return self._start(table, change, own, seen)
        p.parts.append(change)
        p.rows += 1
        p.bytes += size
        if own >= _FILL_SOURCE:
            self._keep_large(p, table, change, own)
        if p.rows >= self.max_rows or p.bytes >= self.max_bytes:
            return [self._cut(table)]
        return []

    def _staged_again(self, p: _Pending, table: TableId, change: Change) -> int:
        """What staging ``change`` in ``p`` copies beyond its own values: the chunks of ``p`` when it makes
        the batch go row by row, and the values it is filled with (see the top of the module). Recorded as
        if it joins ``p``: when it does not fit, it starts a new batch, and ``p`` is cut."""
        extra = 0
        if p.chunked and not p.rowwise and _resolved(change):
            # The batch turns row by row: its chunks now cost what ``_ROWWISE_CHUNK`` says.
            extra = p.chunk_bytes * (_ROWWISE_CHUNK - 1)
            p.rowwise = True
        if p.large is not None and (change.unchanged or change.op is Op.DELETE):
            key = self._key(table, change.prior or change.values)
            if key is not None and change.op is Op.DELETE:
                p.large.pop(key, None)  # nothing is filled from before a delete
            elif key is not None:
                extra += p.large.get(key, 0)
                p.large[key] = 0  # counted: the value is staged twice, not once per change of the key
        return extra

    def _start(self, table: TableId, change: Change, size: int, seen: Position | None) -> list[Batch]:
        """``change`` starts a new batch of ``table``: the pending one, if any, is full (it would not fit)."""
        done = [self._cut(table)] if table in self._pending else []
        p = self._pending[table] = _Pending(started=self.clock(), before=seen)
        p.parts.append(change)
        p.rows, p.bytes = 1, size
        if size >= _FILL_SOURCE:
            self._keep_large(p, table, change, size)
        if p.rows >= self.max_rows or p.bytes >= self.max_bytes:
            done.append(self._cut(table))
        return done

    def _key(self, table: TableId, values: Sequence[str | None]) -> tuple[str | None, ...] | None:
        """The primary key in ``values`` (a row of ``table``'s width; None otherwise)."""
        schema = self.schemas[table]
        names = schema.column_names
        if len(values) != len(names):
            return None
        return tuple(values[names.index(k)] for k in schema.primary_key)

    def _keep_large(self, p: _Pending, table: TableId, change: Change, size: int) -> None:
        """Keep a large change's bytes by key: a later change of the key may be filled with its values."""
        if change.op is Op.DELETE:
            return
        key = self._key(table, change.values)
        if key is not None:
            if p.large is None:
                p.large = {}
            p.large[key] = size

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
        n = data.num_rows
        total = int(data.nbytes) + n * _ROW_OVERHEAD
        ends: list[int] | None = None  # bytes of rows 0..i, per row i: only once a cut falls inside
        done: list[Batch] = []
        offset = 0
        while offset < n:
            p = self._pending.get(table)
            if p is None:
                before = seen if offset == 0 else Position(data.column(POSITION_COLUMN)[offset - 1].as_py())
                p = self._pending[table] = _Pending(started=self.clock(), before=before)
            if not p.chunked and p.parts:  # its first chunk: does the batch hold changes to resolve?
                p.rowwise = any(isinstance(c, Change) and _resolved(c) for c in p.parts)
            factor = p.chunk_factor()
            fits = p.rows + n <= self.max_rows and p.bytes + total * factor <= self.max_bytes
            if offset == 0 and fits:
                take, size = n, total  # the common case: the whole chunk fits
            else:
                ends = ends if ends is not None else _row_ends(data)
                base = ends[offset - 1] if offset else 0
                most = offset + min(n - offset, self.max_rows - p.rows)
                room = (self.max_bytes - p.bytes) // factor
                take = bisect.bisect_right(ends, base + room, offset, most) - offset
                if take == 0 and p.rows:
                    done.append(self._cut(table))  # its next row would not fit: the batch so far is full
                    continue
                take = max(take, 1)  # a row larger than max_bytes is a batch of its own
                size = ends[offset + take - 1] - base
            p.parts.append(ChangeChunk(table, chunk.schema, data if take == n else data.slice(offset, take)))
            p.chunked = True
            p.rows += take
            p.chunk_bytes += size
            p.bytes += size * factor
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
