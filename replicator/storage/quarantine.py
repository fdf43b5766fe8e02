"""Where bad input goes: never dropped, always with its reason.

Each item is two objects under ``_quarantine/<table>/`` in the staging store: the original bytes (a whole
file, one row, or the rows of one batch as Parquet) and a JSON note saying where it came from and why it
was set aside.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog

from replicator.obs import metrics
from replicator.storage.store import ObjectStore

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

    def put_rows(self, *, table: str, source: str, rows: pa.Table) -> list[str]:
        """Set aside many rows of one batch (``source`` names it) at the cost of a few objects: per reason,
        one Parquet file of the rows (columns ``row``, ``position``, ``column``, ``reason``, ``detail``,
        ``op``, ``values``: what the row held, after the table's column policies) and one note with the
        count and the first rows' details. One log line per reason. Returns the keys of the notes."""
        notes = []
        now = datetime.now(UTC)
        reasons = rows.column("reason")
        for reason in sorted(set(pc.unique(reasons).to_pylist())):
            group = rows.filter(pc.equal(reasons, reason))
            ident = hashlib.sha256(f"{source}\x00rows\x00{reason}".encode()).hexdigest()[:16]
            base = f"{PREFIX}{table}/{ident}"
            sink = io.BytesIO()
            # No dictionaries: details and positions are nearly all distinct (2x faster, 4x smaller here).
            pq.write_table(group, sink, compression="zstd", use_dictionary=False)
            self.store.put(base + ".parquet", sink.getvalue())
            head = group.slice(0, 20).to_pylist()
            first = head[0]
            note = {
                "table": table,
                "source": f"{table} position {first['position']}" if group.num_rows == 1 else source,
                "row": first["row"],
                "rows": group.num_rows,
                "reason": reason,
                "detail": first["detail"],
                "details": [f"row {r['row']} ({r['position']}): {r['detail']}" for r in head],
                "data_key": base + ".parquet",
                "quarantined_at": now.isoformat(),
            }
            self.store.put(base + ".json", json.dumps(note, indent=2).encode())
            metrics.QUARANTINED.labels(table=table, reason=reason).inc(group.num_rows)
            log.warning(
                "quarantined", table=table, source=source, rows=group.num_rows, row=first["row"],
                reason=reason, detail=first["detail"],
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
            table = pq.read_table(io.BytesIO(self.store.get(str(note["data_key"]))))
            for row in table.to_pylist():
                data = {"op": row.pop("op"), "values": list(row.pop("values").values())}
                out.append({**note, **row, "data": data, "rows": 1})
        return out
