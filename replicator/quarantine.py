"""Where bad input goes: never dropped, always with its reason.

Each item is two objects under ``_quarantine/<table>/`` in the staging store: the original bytes (a whole
file, or one row) and a JSON note saying where it came from and why it was set aside.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import structlog

from replicator.obs import metrics
from replicator.store import ObjectStore

log = structlog.get_logger(__name__)

PREFIX = "_quarantine/"


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

    def items(self) -> list[dict[str, object]]:
        out = []
        for info in self.store.list(PREFIX):
            if info.key.endswith(".json"):
                out.append(json.loads(self.store.get(info.key)))
        return out
