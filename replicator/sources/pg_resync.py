"""PostgreSQL source: the state document (snapshot done, resyncs wanted, tables copied) and table copies.

A copy, for the initial snapshot or a resync, is a TRUNCATE at ordinal 0 then the table's rows under one
snapshot, all at one LSN; see ``replicator.sources.postgres``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Generator, Iterable, Mapping, Sequence
from datetime import UTC, datetime

import structlog

from replicator.model import Change, Op, TableId, TableSchema
from replicator.sources.pg_rows import encode_position
from replicator.sources.pg_snapshot import SnapshotReader, temporary_snapshot
from replicator.store import ObjectStore

log = structlog.get_logger("replicator.sources.postgres")  # the source's logger, as before the split

STATE_PREFIX = "_state/postgres/"


def state_key(slot: str) -> str:
    return f"{STATE_PREFIX}{slot}.json"


def load_state(store: ObjectStore, slot: str) -> dict[str, object]:
    """The slot's state document; empty if none was saved."""
    try:
        doc: dict[str, object] = json.loads(store.get(state_key(slot)))
        return doc
    except KeyError:
        return {}


def save_state(
    store: ObjectStore, slot: str, *, done: bool, resync: Iterable[TableId], tables: Iterable[TableId]
) -> None:
    """Persist whether the initial snapshot is staged, the resyncs not yet staged, and the tables known."""
    doc = {
        "version": 1,
        "slot": slot,
        "snapshot_done": done,
        "resync": sorted(str(t) for t in resync),
        "tables": [str(t) for t in tables],
        "updated_at": datetime.now(UTC).isoformat(),
    }
    store.put(state_key(slot), json.dumps(doc, indent=1).encode())


def copy_table(
    reader: SnapshotReader, table: TableId, names: Sequence[str], lsn: int, now: datetime
) -> Generator[Change, None, int]:
    """``table``'s copy at ``lsn``: a TRUNCATE (ordinal 0), then its rows (ordinals 1..n). Returns n."""
    yield Change(table, Op.TRUNCATE, (), encode_position(lsn, 0), now)
    n = 0
    for chunk in reader.rows(table, names):
        for values in chunk:
            n += 1
            yield Change(table, Op.INSERT, values, encode_position(lsn, n), now)
    return n


def copy_tables(
    dsn: str, snapshot: str, schemas: Mapping[TableId, TableSchema], lsn: int, yielded: dict[TableId, str]
) -> Generator[Change, None, dict[TableId, str]]:
    """The initial copy of every table under the slot's exported ``snapshot``, at ``lsn``. Each table's
    last position goes into ``yielded`` once its copy is read; returns them all (what must be acknowledged
    before the snapshot is done)."""
    reader = SnapshotReader(dsn, snapshot)
    pending: dict[TableId, str] = {}
    now = datetime.now(UTC)
    try:
        for table, schema in schemas.items():
            started = time.monotonic()
            n = yield from copy_table(reader, table, schema.column_names, lsn, now)
            pending[table] = yielded[table] = encode_position(lsn, n).value
            log.info("table_copied", table=str(table), rows=n, seconds=round(time.monotonic() - started, 2))
    finally:
        reader.close()
    return pending


def recopy_table(
    dsn: str, slot: str, table: TableId, names: Sequence[str]
) -> Generator[Change, None, tuple[int, int, int]]:
    """A resync's copy of ``table`` under a fresh temporary slot's snapshot, at its consistent point - 1.
    Returns (consistent point, the copy's LSN, rows)."""
    temp = f"{slot[:40]}_resync_{uuid.uuid4().hex[:8]}"
    with temporary_snapshot(dsn, temp) as (consistent, snapshot):
        reader = SnapshotReader(dsn, snapshot)
        lsn, now = consistent - 1, datetime.now(UTC)
        try:
            n = yield from copy_table(reader, table, names, lsn, now)
        finally:
            reader.close()
    return consistent, lsn, n
