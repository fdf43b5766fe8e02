"""Per-table progress of the DMS source: positions, what this process has read, and the persisted document.

Positions (``Position.value``): ``<phase>/<name> <row>`` (see ``replicator.sources.dms.source``). The state
document (``_state/dms/<schema>.<table>.json``) records the handled files, the partly acknowledged one, and
the operator's pending decision; ``load`` and ``save`` are its only readers and writers.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from replicator.model import Position, TableSchema
from replicator.sources.dms.layout import CDC, LOAD
from replicator.storage import ObjectStore

STATE_PREFIX = "_state/dms/"


def encode_position(file_id: str, row: int) -> Position:
    return Position(f"{file_id} {row:010d}")


def decode_position(position: Position) -> tuple[str, int]:
    """``"2/x.csv 0000000042"`` -> ``("2/x.csv", 42)``."""
    file_id, _, row = position.value.rpartition(" ")
    return file_id, int(row)


@dataclass(slots=True)
class Run:
    """A file read (or being read) in this process and not yet consumed."""

    file_id: str
    last_yielded: int = 0  # row number of the last change yielded, 0 if none
    complete: bool = False  # read to its end


@dataclass(slots=True)
class TableState:
    schema: TableSchema
    prefix: str  # "schema/table/"
    done: list[str] = field(default_factory=list)  # persisted, sorted
    partial: tuple[str, int] | None = None  # persisted
    runs: list[Run] = field(default_factory=list)
    frontier: tuple[str, int, bool] | None = None  # furthest (file, row, complete) read or acked
    acked: str = ""  # last acknowledged Position.value
    stopped: dict[str, Any] | None = None  # persisted: why the table waits for an operator
    skipped: dict[str, list[int]] = field(default_factory=dict)  # persisted: bad rows the operator let go
    epoch: int = 0  # bumped when the in-memory cursor is rewound to the acknowledged point
    # Listed and not yet consumed: file id -> when the store says it was written (source lag).
    pending: dict[str, datetime] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{STATE_PREFIX}{self.schema.table.schema}.{self.schema.table.name}.json"

    def load_done(self) -> bool:
        """Every full-load file seen so far is read and nothing stops the table (CDC may follow)."""
        return self.stopped is None and not any(r.file_id < CDC and not r.complete for r in self.runs)

    def rewind(self) -> None:
        """Forget what was read after the acknowledged point (as a restart would)."""
        self.epoch += 1
        self.runs = []
        self.frontier = None
        if self.partial:
            self.frontier = (self.partial[0], self.partial[1], False)
        elif self.done:
            self.frontier = (self.done[-1], 0, True)

    def mark_done(self, file_ids: list[str], recent_files: int) -> None:
        """Record handled files, remembering at most ``recent_files`` per phase (the listing window)."""
        for f in file_ids:
            if f not in self.done:
                bisect.insort(self.done, f)
            self.skipped.pop(f, None)
            self.pending.pop(f, None)
        for phase in (LOAD, CDC):
            mine = [d for d in self.done if d.startswith(phase)]
            for old in mine[: max(0, len(mine) - recent_files)]:
                self.done.remove(old)


def lag_seconds(t: TableState, now: datetime | None = None) -> float:
    """Age of the oldest listed file of ``t`` not yet consumed, in seconds; 0 when caught up."""
    if not t.pending:
        return 0.0
    return max(0.0, ((now or datetime.now(UTC)) - min(t.pending.values())).total_seconds())


def load(state: ObjectStore, t: TableState) -> None:
    """Fill ``t`` from its persisted document, if any; the cursor starts at the acknowledged point."""
    try:
        doc = json.loads(state.get(t.key))
    except KeyError:
        return
    t.done = sorted(doc["done"])
    p = doc.get("partial")
    t.partial = (p["file"], int(p["rows"])) if p else None
    t.stopped = doc.get("stopped")
    t.skipped = {k: list(v) for k, v in doc.get("skipped", {}).items()}
    if t.partial:
        t.acked = encode_position(*t.partial).value
    t.rewind()
    t.epoch = 0


def save(state: ObjectStore, t: TableState) -> None:
    """Persist ``t``'s document (one atomic put)."""
    doc = {
        "version": 1,
        "table": str(t.schema.table),
        "done": t.done,
        "partial": {"file": t.partial[0], "rows": t.partial[1]} if t.partial else None,
        "stopped": t.stopped,
        "skipped": t.skipped,
        "updated_at": datetime.now(UTC).isoformat(),
    }
    state.put(t.key, json.dumps(doc, indent=1).encode())
