"""Why a table waits for an operator, the same way whichever source or step stopped it.

A table is *stopped* when its source set it aside (DMS: a bad file or row under the ``stop`` policy, a wrong
``csv_null_value``; PostgreSQL: a value its declared type cannot hold; SQL Server: a position older than the
change table's cleanup) or when its merge fails (an incompatible schema change, a constraint). Sources
persist their stops in the staging store (``_state/<source>/...``), merge failures are recorded in the
warehouse, so every view (``status``, ``tables``, ``GET /tables``, metrics, ``run --once``'s exit code)
says the same, also after a restart and from another process.

``Stop`` is that one shape; ``from_source`` turns each source's record into it and ``persisted`` reads
them all from the staging store (the CLI without a daemon; a daemon asks its source, ``live``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from replicator.model import TableId
from replicator.storage import ObjectStore

SOURCE, MERGE = "source", "merge"
DMS_PREFIX, PG_PREFIX, SQLSERVER_PREFIX = "_state/dms/", "_state/postgres/", "_state/sqlserver/"
DMS_FEED = "_txn"  # the PreserveTransactions feed's state, _state/dms/_txn.json

# What the operator can do about each kind of stop, and how to say it.
_DMS_TODO = (
    "fix the file in place (or the setting that misreads it) and run `replicator retry {t}`,"
    " or `replicator skip {t}` to leave it in the quarantine and go on"
)
_RESYNC_TODO = "fix the cause, then `replicator resync {t}` (a fresh copy of the table)"
_MERGE_TODO = "merges are retried each round: fix the cause (see the reason), or pause and resync {t}"


@dataclass(frozen=True, slots=True)
class Stop:
    """One stopped table: what stopped it, where, since when, and the way out."""

    table: str
    origin: str  # SOURCE or MERGE
    source: str  # dms, postgres, sqlserver; "warehouse" for a merge
    reason: str  # a short word: csv_syntax, bad_value, type_mismatch, needs_resync, merge_failed, ...
    detail: str
    since: str | None  # ISO 8601 with its zone
    object: str | None = None  # the file (its URI) that stopped it, when there is one
    row: int | None = None  # its row (1 = the first), None for the whole file
    position: str | None = None  # where in the source, readable
    actions: list[str] = field(default_factory=list)  # of retry, skip, resync
    todo: str = ""
    # Stopped with every table: the shared feed of a PreserveTransactions endpoint stopped (commit order
    # lets no table go past the bad row); retry or skip on any of them decides for the feed.
    shared: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def where(self) -> str:
        """``OBJECT row N`` or the position, for one line of text."""
        if self.object:
            return self.object + (f" row {self.row}" if self.row else " (the whole file)")
        return self.position or "-"


def from_source(kind: str, table: str, raw: Mapping[str, Any]) -> Stop:
    """A source's own record of a stop (as it persists it) in the common shape."""
    if kind == "dms":
        file_id = str(raw.get("file") or "")
        row = raw.get("row")
        return Stop(
            table=table, origin=SOURCE, source=kind, reason=str(raw.get("reason") or "stopped"),
            detail=str(raw.get("detail") or ""), since=_str(raw.get("since")),
            object=_str(raw.get("source")), row=int(row) if row else None,
            position=readable_position(f"{file_id} {int(row or 0):010d}") if file_id else None,
            actions=["retry", "skip", "resync"], todo=_DMS_TODO.format(t=table),
        )  # fmt: skip
    return Stop(
        table=table, origin=SOURCE, source=kind, reason=str(raw.get("reason") or "stopped"),
        detail=str(raw.get("detail") or ""), since=_str(raw.get("since")),
        position=_str(raw.get("position")), actions=["resync"],
        todo=str(raw.get("todo") or _RESYNC_TODO.format(t=table)),
    )  # fmt: skip


def from_merge(table: str, error: str, since: str | None = None) -> Stop:
    return Stop(
        table=table, origin=MERGE, source="warehouse", reason="merge_failed", detail=error, since=since,
        actions=["resync"], todo=_MERGE_TODO.format(t=table),
    )  # fmt: skip


def persisted(store: ObjectStore, tables: Iterable[TableId]) -> dict[TableId, Stop]:
    """Every stop of ``tables`` that a source persisted in the staging ``store``."""
    wanted = {str(t): t for t in tables}
    out: dict[TableId, Stop] = {}
    feed: Mapping[str, Any] | None = None
    for info in store.list(DMS_PREFIX):
        name = info.key[len(DMS_PREFIX) :].removesuffix(".json")
        doc = _doc(store, info.key)
        if name == DMS_FEED and isinstance(doc.get("stopped"), dict):
            feed = doc["stopped"]
        if name in wanted and isinstance(doc.get("stopped"), dict):
            out[wanted[name]] = from_source("dms", name, doc["stopped"])
    if feed is not None:
        for name, table in wanted.items():
            out.setdefault(table, _shared(from_source("dms", name, feed)))
    for info in store.list(PG_PREFIX):
        recorded = _doc(store, info.key).get("stopped")
        for name, raw in (recorded if isinstance(recorded, dict) else {}).items():
            if name in wanted and isinstance(raw, dict):
                out[wanted[name]] = from_source("postgres", name, raw)
    for info in store.list(SQLSERVER_PREFIX):
        doc = _doc(store, info.key)
        name = str(doc.get("table") or "")
        if name in wanted and isinstance(doc.get("stopped"), dict):
            out[wanted[name]] = from_source("sqlserver", name, doc["stopped"])
    return out


def live(source: Any, kind: str, tables: Iterable[TableId] = ()) -> dict[TableId, Stop]:
    """The stops a running source holds (``problems()``: a list of its records, each with ``table``; ``*``:
    its shared feed, which stops every one of ``tables``)."""
    problems = getattr(source, "problems", None)
    if problems is None:
        return {}
    out: dict[TableId, Stop] = {}
    feed = None
    for raw in problems():
        name = str(raw.get("table") or "")
        if name == "*":
            feed = raw
        elif name:
            out[TableId.parse(name)] = from_source(kind, name, raw)
    if feed is not None:
        for table in tables:
            out.setdefault(table, _shared(from_source(kind, str(table), feed)))
    return out


def _shared(stop: Stop) -> Stop:
    return dataclasses.replace(
        stop, shared=True,
        detail=f"the transaction feed stopped every table: {stop.detail}",
        todo=stop.todo + " (for the feed: every table goes on)",
    )  # fmt: skip


_DMS_POSITION = re.compile(r"^([12])/(\S+) (\d{10})$")


def readable_position(value: str | None) -> str | None:
    """``2/20261206-1404475229.csv 0000000018`` -> ``cdc 20261206-1404475229.csv row 18``; other
    sources' positions (LSNs) are shown as they are."""
    if value is None:
        return None
    m = _DMS_POSITION.match(value)
    if m is None:
        return value
    phase, name, row = m.groups()
    where = f"{'full load' if phase == '1' else 'cdc'} {name}"
    return f"{where} row {int(row)}" if int(row) else where


def _doc(store: ObjectStore, key: str) -> dict[str, Any]:
    if not key.endswith(".json"):
        return {}
    try:
        doc = json.loads(store.get(key))
    except (KeyError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
