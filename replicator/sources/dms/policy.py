"""What bad DMS input does to its table: quarantine it, then stop the table or let it go on.

Per table the policy is ``stop`` (default: the table waits with ``TableState.stopped`` until the operator
runs ``replicator retry`` or ``replicator skip``, see ``replicator.ops.stops``) or ``quarantine`` (the row
or file is set aside and the table goes on). Rows or files the operator chose to skip are tolerated
whatever the policy. Every bad part leaves one quarantine record; stopping also counts an error, logs what
to do and persists the table's state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime

import structlog

from replicator.model import TableId
from replicator.obs import metrics
from replicator.sources.dms.csvfiles import BadRow
from replicator.sources.dms.layout import DmsOptions
from replicator.sources.dms.state import TableState
from replicator.storage import ObjectStore, Quarantine

log = structlog.get_logger(__name__)


class BadInput:
    """The bad-input decisions of one ``DmsSource``; ``save`` persists a table's state."""

    def __init__(
        self,
        store: ObjectStore,
        quarantine: Quarantine,
        options: DmsOptions,
        save: Callable[[TableState], None],
        redact: Collection[TableId] = frozenset(),
    ) -> None:
        self.store = store
        self.quarantine = quarantine
        self.options = options
        self.save = save
        # Tables with column policies: a bad row is read before the policies could apply, so its bytes are
        # never stored (the quarantine keeps the source object and row, which stays in the source bucket).
        self.redact = frozenset(redact)

    def tolerated(self, t: TableState, file_id: str, row: int) -> bool:
        """True when bad input at ``row`` of ``file_id`` (0: whole file) is set aside and ``t`` goes on."""
        let_go = t.skipped.get(file_id, ())
        return self.options.policy(t.schema.table) == "quarantine" or row in let_go or 0 in let_go

    def bad_file(self, t: TableState, file_id: str, key: str, reason: str, detail: str) -> bool:
        """Quarantine a file that cannot be read (further); True when the table goes on."""
        self.quarantine_file(t, key, reason, detail)
        if self.tolerated(t, file_id, 0):
            return True
        self.stop(t, reason, file_id, key, None, detail)
        return False

    def stop(self, t: TableState, reason: str, file_id: str, key: str, row: int | None, detail: str) -> None:  # noqa: PLR0917
        """Stop ``t`` until the operator decides (persisted: a restart keeps it stopped)."""
        t.stopped = {
            "reason": reason, "file": file_id, "source": self.store.uri(key), "row": row, "detail": detail,
            "since": datetime.now(UTC).isoformat(), "actions": ["retry", "skip"],
        }  # fmt: skip
        metrics.ERRORS.labels(stage="source", kind=reason).inc()
        table = t.schema.table
        log.error(
            "dms_table_stopped", table=str(t.schema.table), file=key, row=row, reason=reason, detail=detail,
            todo=f"fix the file in place (or the setting that misreads it), then replicator retry {table};"
            f" or replicator skip {table} to leave it in the quarantine; other tables go on",
        )  # fmt: skip
        self.save(t)

    def quarantine_row(self, t: TableState, key: str, bad: BadRow) -> None:
        detail = f"{t.schema.table} {key} row {bad.row}: {bad.detail}"
        redacted = t.schema.table in self.redact
        if redacted:
            detail += "; the row's bytes are not kept (the table has column policies): see the source object"
        self.quarantine.put(
            table=str(t.schema.table), source=self.store.uri(key), reason=bad.reason, row=bad.row,
            detail=detail, data=None if redacted else bad.data,
        )  # fmt: skip

    def quarantine_file(self, t: TableState, key: str, reason: str, detail: str) -> None:
        self.quarantine.put(
            table=str(t.schema.table), source=self.store.uri(key), reason=reason,
            detail=f"{t.schema.table} {key}: {detail}",
        )  # fmt: skip
