"""Where bad input goes: never dropped, always with its reason.

Each item is two objects under ``_quarantine/<table>/`` in the staging store: the original bytes (a whole
file, one row, or the rows of one batch as Parquet) and a JSON note saying where it came from and why it
was set aside. A row set aside where it was read (a source file's row that does not parse) is located in
its source object by row number and ``byte_range`` (``offset``, ``length``; of the decompressed bytes when
``decompressed``) or, in a Parquet file, ``parquet_row`` (``row_group``, ``index``). On a table with column
policies the note holds no bytes at all (``data_key`` is null) but the row's ``fields`` with the policies
applied, when it splits into the table's columns.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
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
        byte_range: tuple[int, int] | None = None,
        decompressed: bool = False,
        parquet_row: tuple[int, int] | None = None,
        fields: Mapping[str, str | None] | None = None,
    ) -> str:
        """Set ``data`` aside. ``reason`` is a short stable label (the metric's), ``detail`` says what to fix.
        ``byte_range`` (offset, length; ``decompressed``: in the gzip file's content) or ``parquet_row``
        (row group, index in it) say where ``row`` is in ``source``; ``fields``: the row's values by column,
        which the caller has already passed through the table's column policies.

        Returns the key of the note. Idempotent for the same source, row and reason.
        """
        now = datetime.now(UTC)
        ident = hashlib.sha256(f"{source}\x00{row}\x00{reason}".encode()).hexdigest()[:16]
        base = f"{PREFIX}{table}/{ident}"
        if data is not None:
            self.store.put(base + ".data", data)
        note: dict[str, object] = {
            "table": table,
            "source": source,
            "row": row,
            "reason": reason,
            "detail": detail,
            "data_key": base + ".data" if data is not None else None,
            "quarantined_at": now.isoformat(),
        }
        place: dict[str, object] = {}
        if byte_range is not None:
            offset, length = byte_range
            place["byte_range"] = {"offset": offset, "length": length, "decompressed": decompressed}
        if parquet_row is not None:
            place["parquet_row"] = {"row_group": parquet_row[0], "index": parquet_row[1]}
        note.update(place)
        if fields is not None:
            note["fields"] = dict(fields)
        self.store.put(base + ".json", json.dumps(note, indent=2).encode())
        metrics.QUARANTINED.labels(table=table, reason=reason).inc()
        log.warning("quarantined", table=table, source=source, row=row, reason=reason, detail=detail, **place)
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
