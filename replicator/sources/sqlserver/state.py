"""SQL Server source: options, errors, and each table's reading cursor and its persisted progress.

The progress document's fields are described in ``replicator.sources.sqlserver.source``.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from replicator.model import TableId, TableSchema
from replicator.sources.sqlserver.values import ZERO, decode_position
from replicator.storage import ObjectStore

STATE_PREFIX = "_state/sqlserver/"


class Cursor(Protocol):
    def execute(self, operation: str, params: Any = ...) -> Any: ...
    def fetchall(self) -> list[tuple[Any, ...]]: ...
    def close(self) -> Any: ...


class Connection(Protocol):
    def cursor(self) -> Cursor: ...
    def close(self) -> Any: ...


class SqlServerSourceError(RuntimeError):
    """A problem the operator must fix; the message says what and how."""


class NeedsResync(SqlServerSourceError):
    """The table's position is older than what the capture instance still holds: changes were cleaned up."""


@dataclass(frozen=True, slots=True)
class SqlServerOptions:
    net_changes: bool = False
    page_rows: int = 10_000
    poll_interval_seconds: float = 1.0
    max_poll_interval_seconds: float = 30.0
    capture_instances: Mapping[TableId, str] = field(default_factory=dict)
    check_capture_job: bool = True
    server_time_zone: str = "UTC"
    initial_load: bool = True
    idle_save_seconds: float = 60.0  # how often an idle table's advancing next_lsn is persisted


@dataclass(slots=True)
class TableState:
    schema: TableSchema
    ci: str  # capture instance
    # persisted
    next_lsn: bytes | None = None  # None: never started
    acked: str = ""
    snapshot: dict[str, Any] | None = None
    # reading cursor (in memory)
    cur_lsn: bytes = ZERO
    cur_seq: bytes = ZERO
    after: str = ""  # skip positions up to this one
    range: tuple[bytes, bytes] | None = None  # net: the LSN range being read, or read and not yet staged
    offset: int = 0  # net: rows of the current range already read
    last_yielded: str = ""
    caught_up: bool = False  # everything up to cur_lsn's predecessor has been yielded
    snap_ordinal: int = 0
    snap_after: list[str | None] | None = None
    snap_complete: bool = False
    snap_keys: deque[tuple[int, list[str | None]]] = field(default_factory=deque)
    saved_at: float = 0.0
    failed: str | None = None
    # persisted: why the table waits for an operator (its position is older than the change table's cleanup)
    stopped: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{STATE_PREFIX}{self.schema.table.schema}.{self.schema.table.name}.json"


def load_state(store: ObjectStore, t: TableState, *, net_changes: bool) -> None:
    """Set ``t``'s persisted progress and its reading cursor from the store; nothing if never saved."""
    try:
        doc = json.loads(store.get(t.key))
    except KeyError:
        return
    if doc.get("capture_instance") != t.ci:
        raise SqlServerSourceError(
            f"{t.schema.table}: its position belongs to capture instance "
            f"{doc.get('capture_instance')!r}, not {t.ci!r}; LSNs of different capture instances "
            "are not comparable. Resync the table "
            f"(delete {t.key} from the staging store) or configure the old capture instance"
        )
    t.stopped = doc.get("stopped")
    t.failed = str(t.stopped["detail"]) if t.stopped else None
    t.next_lsn = bytes.fromhex(doc["next_lsn"]) if doc.get("next_lsn") else None
    if doc.get("range_to") and t.next_lsn is not None:
        t.range = (t.next_lsn, bytes.fromhex(doc["range_to"]))
    t.acked = t.after = doc.get("acked") or ""
    t.snapshot = doc.get("snapshot")
    t.cur_lsn = t.next_lsn or ZERO
    if t.snapshot is not None and not t.snapshot["done"]:
        t.snap_ordinal = int(t.snapshot["rows"])
        t.snap_after = t.snapshot["after_key"]
    elif t.acked and not net_changes:
        lsn, seqval, _ = decode_position(t.acked)
        if lsn == t.next_lsn:
            t.cur_seq = seqval  # resume inside the transaction at next_lsn, after what is acked
    if t.range is not None:
        # The same range pages the same way: continue right after the acknowledged row.
        t.offset = decode_position(t.acked)[2] if t.acked and t.acked[:20] >= t.range[0].hex() else 0
    t.last_yielded = t.acked


def mark_stopped(t: TableState, detail: str) -> None:
    """``t``'s changes were cleaned up before they were read: it stops (persisted with the next save) until
    it is loaded again; shown by ``replicator status`` and the ``replicator_table_stopped`` gauge."""
    t.failed = detail
    t.stopped = {
        "reason": "needs_resync", "detail": detail, "position": t.acked or None,
        "since": datetime.now(UTC).isoformat(),
        "todo": f"the changes in between are gone: load the table again (stop the daemon, delete {t.key} from"
        " the staging store, start it: the table is copied again)",
    }  # fmt: skip


def pending_range_to(t: TableState, *, net_changes: bool) -> str | None:
    """Net changes: the end of the range read but not staged whole; a restart reads it again."""
    if not net_changes or t.range is None or t.next_lsn != t.range[0]:
        return None
    return t.range[1].hex()


def state_doc(t: TableState, *, net_changes: bool) -> bytes:
    """``t``'s progress document, as stored."""
    doc = {
        "version": 1,
        "table": str(t.schema.table),
        "capture_instance": t.ci,
        "next_lsn": t.next_lsn.hex() if t.next_lsn is not None else None,
        "range_to": pending_range_to(t, net_changes=net_changes),
        "acked": t.acked,
        "snapshot": t.snapshot,
        "stopped": t.stopped,
        "updated_at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(doc, indent=1).encode()
