"""PostgreSQL source: the state document (snapshot done, resyncs wanted, tables copied, tables stopped).

The copies themselves are ``initial_copy``'s; see ``source`` in this package.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import structlog

from replicator.model import TableId
from replicator.storage import ObjectStore

log = structlog.get_logger("replicator.sources.postgres.source")  # the source's logger, as before the split

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
    store: ObjectStore,
    slot: str,
    *,
    done: bool,
    resync: Iterable[TableId],
    tables: Iterable[TableId],
    stopped: Mapping[TableId, Mapping[str, object]] | None = None,
    oids: Mapping[TableId, int] | None = None,
) -> None:
    """Persist whether the initial snapshot is staged, the resyncs not yet staged, the tables known, the
    tables stopped for bad input (``PostgresSource.stop_table``: reason, position, detail, since), and each
    table's relation OID (a table dropped and created again under its name has another)."""
    doc = {
        "version": 1,
        "slot": slot,
        "snapshot_done": done,
        "resync": sorted(str(t) for t in resync),
        "tables": [str(t) for t in tables],
        "stopped": {str(t): dict(v) for t, v in sorted((stopped or {}).items())},
        "oids": {str(t): int(v) for t, v in sorted((oids or {}).items())},
        "updated_at": datetime.now(UTC).isoformat(),
    }
    store.put(state_key(slot), json.dumps(doc, indent=1).encode())


def stopped_tables(doc: Mapping[str, object], tables: Iterable[TableId]) -> dict[TableId, dict[str, object]]:
    """The stops a state document records, for those of ``tables`` (a table gone from the schemas is
    forgotten with its stop)."""
    recorded = doc.get("stopped")
    if not isinstance(recorded, dict):
        return {}
    return {t: dict(recorded[str(t)]) for t in tables if isinstance(recorded.get(str(t)), dict)}


def source_stops(store: ObjectStore) -> dict[TableId, dict[str, object]]:
    """Every table a PostgreSQL source stopped, over all slots whose state is in ``store`` (for
    ``replicator status``, which runs without a source connection)."""
    out: dict[TableId, dict[str, object]] = {}
    for info in store.list(STATE_PREFIX):
        if not info.key.endswith(".json"):
            continue
        try:
            doc = json.loads(store.get(info.key))
        except (KeyError, ValueError):
            continue
        for name, stop in (doc.get("stopped") or {}).items():
            if isinstance(stop, dict):
                out[TableId.parse(name)] = {**stop, "slot": doc.get("slot")}
    return out
