"""Per-table batching: changes accumulate per table and a batch is cut on rows, bytes or age.

The buffer also drops changes it has already seen: after a restart a source re-yields everything after its
last acknowledged position, and some of that may already be staged (a crash between stage and ack).
Dropping by position keeps every change staged exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from replicator.model import Batch, Change, Op, Position, SchemaChange, TableId, TableSchema

# Rough per-change overhead on top of the value text, so many tiny rows still hit max_bytes sensibly.
_ROW_OVERHEAD = 48


@dataclass(slots=True)
class _Pending:
    changes: list[Change] = field(default_factory=list)
    bytes: int = 0
    started: float = 0.0


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
        self.dropped = 0

    def add(self, change: Change) -> list[Batch]:
        """Take one change; return the batches it completes (usually none).

        A TRUNCATE is a batch of its own: what came before it is cut first, so the merge applies the
        truncate exactly between the changes that surround it at the source.
        """
        seen = self.seen_through.get(change.table)
        if seen is not None and change.position <= seen:
            self.dropped += 1
            return []
        self.seen_through[change.table] = change.position
        if change.op is Op.TRUNCATE:
            done = [self._cut(change.table)] if change.table in self._pending else []
            return [*done, Batch(change.table, self.schemas[change.table], [change])]
        p = self._pending.get(change.table)
        if p is None:
            p = self._pending[change.table] = _Pending(started=self.clock())
        p.changes.append(change)
        p.bytes += _ROW_OVERHEAD + sum(len(v) for v in change.values if v is not None)
        if len(p.changes) >= self.max_rows or p.bytes >= self.max_bytes:
            return [self._cut(change.table)]
        return []

    def set_schema(self, change: SchemaChange) -> list[Batch]:
        """The table's shape changes: cut what was collected under the old shape, then use the new one."""
        done = [self._cut(change.table)] if change.table in self._pending else []
        self.schemas[change.table] = change.schema
        return done

    def due(self) -> list[Batch]:
        """Batches whose oldest change has waited ``max_age_seconds``."""
        now = self.clock()
        return [self._cut(t) for t, p in list(self._pending.items()) if now - p.started >= self.max_age]

    def drain(self) -> list[Batch]:
        """Every pending batch, whatever its size or age."""
        return [self._cut(t) for t in list(self._pending)]

    def pending_rows(self) -> int:
        return sum(len(p.changes) for p in self._pending.values())

    def _cut(self, table: TableId) -> Batch:
        p = self._pending.pop(table)
        return Batch(table, self.schemas[table], p.changes)
