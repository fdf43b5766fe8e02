"""PostgreSQL source: the state document (snapshot done, resyncs wanted, tables copied).

The copies themselves are ``replicator.sources.pg_copy``'s; see ``replicator.sources.postgres``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

import structlog

from replicator.model import TableId
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
