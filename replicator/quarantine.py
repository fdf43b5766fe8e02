"""Where bad input goes: never dropped, always with its reason.

Each item is two objects under ``_quarantine/<table>/`` in the staging store: the original bytes (a whole
file, one row, or the rows of one batch as JSON lines) and a JSON note saying where it came from and why it
was set aside.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from replicator.obs import metrics
from replicator.store import ObjectStore

log = structlog.get_logger(__name__)

PREFIX = "_quarantine/"


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a batch set aside by ``Quarantine.put_rows``."""

    row: int  # index of the change in its batch
    position: str
    reason: str
    detail: str
    data: dict[str, Any]  # what the row held (after the table's column policies)


class Quarantine:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def put(
        self,
        *,
        table: str,
        source: str,
        reason: str,
        detail: str,
        data: bytes | None = None,
        row: int | None = None,
    ) -> str:
        """Set ``data`` aside. ``reason`` is a short stable label (the metric's), ``detail`` says what to fix.

        Returns the key of the note. Idempotent for the same source, row and reason.
        """
        now = datetime.now(UTC)
        ident = hashlib.sha256(f"{source}\x00{row}\x00{reason}".encode()).hexdigest()[:16]
        base = f"{PREFIX}{table}/{ident}"
        if data is not None:
            self.store.put(base + ".data", data)
        note = {
            "table": table,
            "source": source,
            "row": row,
            "reason": reason,
            "detail": detail,
            "data_key": base + ".data" if data is not None else None,
            "quarantined_at": now.isoformat(),
        }
        self.store.put(base + ".json", json.dumps(note, indent=2).encode())
        metrics.QUARANTINED.labels(table=table, reason=reason).inc()
        log.warning("quarantined", table=table, source=source, row=row, reason=reason, detail=detail)
        return base + ".json"

    def put_rows(self, *, table: str, source: str, rows: Sequence[Row]) -> list[str]:
        """Set aside many rows of one batch (``source`` names it) at the cost of a few objects: per reason,
        one JSON-lines object holding every row (row, position, detail, data) and one note with the count
        and the first rows' details. One log line per reason. Returns the keys of the notes."""
        by_reason: dict[str, list[Row]] = {}
        for r in rows:
            by_reason.setdefault(r.reason, []).append(r)
        notes = []
        now = datetime.now(UTC)
        for reason, group in sorted(by_reason.items()):
            ident = hashlib.sha256(f"{source}\x00rows\x00{reason}".encode()).hexdigest()[:16]
            base = f"{PREFIX}{table}/{ident}"
            lines = (
                json.dumps({"row": r.row, "position": r.position, "detail": r.detail, "data": r.data})
                for r in group
            )
            self.store.put(base + ".data", ("\n".join(lines) + "\n").encode())
            note = {
                "table": table,
                "source": f"{table} position {group[0].position}" if len(group) == 1 else source,
                "row": group[0].row,
                "rows": len(group),
                "reason": reason,
                "detail": group[0].detail,
                "details": [f"row {r.row} ({r.position}): {r.detail}" for r in group[:20]],
                "data_key": base + ".data",
                "quarantined_at": now.isoformat(),
            }
            self.store.put(base + ".json", json.dumps(note, indent=2).encode())
            metrics.QUARANTINED.labels(table=table, reason=reason).inc(len(group))
            log.warning(
                "quarantined", table=table, source=source, rows=len(group), row=group[0].row, reason=reason,
                detail=group[0].detail,
            )  # fmt: skip
            notes.append(base + ".json")
        return notes

    def items(self) -> list[dict[str, object]]:
        out = []
        for info in self.store.list(PREFIX):
            if info.key.endswith(".json"):
                out.append(json.loads(self.store.get(info.key)))
        return out

    def entries(self) -> list[dict[str, object]]:
        """Every item, rows set aside together by ``put_rows`` one by one (with their own row, position
        and detail, and ``data`` holding what the row held)."""
        out: list[dict[str, object]] = []
        for note in self.items():
            if "rows" not in note:
                out.append(note)
                continue
            for line in self.store.get(str(note["data_key"])).decode().splitlines():
                row = json.loads(line)
                out.append({**note, **row, "rows": 1})
        return out
