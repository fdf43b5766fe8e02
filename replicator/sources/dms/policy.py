"""What bad DMS input does to its table: quarantine it, then stop the table or let it go on.

Per table the policy is ``stop`` (default: the table waits with ``TableState.stopped`` until the operator
runs ``replicator retry`` or ``replicator skip``, see ``replicator.ops.stops``) or ``quarantine`` (the row
or file is set aside and the table goes on). Rows or files the operator chose to skip are tolerated
whatever the policy. Every bad part leaves one quarantine record; stopping also counts an error, logs what
to do and persists the table's state.

A bad row is read before the stage could apply the table's column policies, so it is recorded here with
them applied: where it is (the source object, the row number, the row's byte range, or its Parquet row
group and index: the object stays in the customer's bucket), why, and, on a table with column policies,
never its bytes but its fields after the policies (a dropped column is left out, a nulled one is null, a
hashed one is its HMAC), and no fields at all when the row does not split into the table's columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import structlog

from replicator.model import TableId
from replicator.obs import metrics
from replicator.schema import ColumnPolicies
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
        policies: Mapping[TableId, ColumnPolicies] | None = None,
    ) -> None:
        self.store = store
        self.quarantine = quarantine
        self.options = options
        self.save = save
        # Tables with column policies: their bad rows' bytes are never stored, only their fields after the
        # policies (see the module docstring).
        self.policies = {t: p for t, p in (policies or {}).items() if p.rules}

    @property
    def redact(self) -> bool:
        """Whether any table has column policies (a row that names no table may be one of theirs)."""
        return bool(self.policies)

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
        detail = f"{t.schema.table} {key} row {bad.row}: {bad.detail} ({where(bad)})"
        policies = self.policies.get(t.schema.table)
        fields = None
        if policies is not None:
            detail += "; the row's bytes are not kept (the table has column policies): see the source object"
            if bad.values is not None:
                fields = with_policies(bad.values, policies)
                detail += ", and the fields after the policies"
        self.quarantine.put(
            table=str(t.schema.table), source=self.store.uri(key), reason=bad.reason, row=bad.row,
            detail=detail, data=None if policies is not None else bad.data, byte_range=bad.span,
            decompressed=bad.decompressed, parquet_row=bad.group, fields=fields,
        )  # fmt: skip

    def quarantine_file(self, t: TableState, key: str, reason: str, detail: str) -> None:
        self.quarantine.put(
            table=str(t.schema.table), source=self.store.uri(key), reason=reason,
            detail=f"{t.schema.table} {key}: {detail}",
        )  # fmt: skip


def where(bad: BadRow) -> str:
    """Where a bad row is in its file, in words: its byte range, or its Parquet row group."""
    if bad.span is not None:
        offset, length = bad.span
        of = " of the decompressed file" if bad.decompressed else ""
        return f"bytes {offset}-{offset + length - 1}{of}" if length else f"an empty row at byte {offset}{of}"
    if bad.group is not None:
        return f"row group {bad.group[0]}, row {bad.group[1]} in it"
    return "place unknown"


def with_policies(values: Mapping[str, str | None], policies: ColumnPolicies) -> dict[str, str | None]:
    """A bad row's fields with the table's column policies applied, as the stage applies them: ``drop``
    leaves the column out, ``null`` makes it null, ``hash`` makes it its HMAC. Bytes that are not UTF-8
    are written escaped (``\\xff``) and, in a hashed column, hashed so (such a value is never staged, so
    no staged hash could match it anyway)."""
    out: dict[str, str | None] = {}
    for name, value in values.items():
        rule = policies.rules.get(name)
        if rule is None:
            out[name] = None if value is None else _printable(value)
        elif rule == "hash":
            out[name] = None if value is None else policies.hash(_printable(value))
        elif rule == "null":
            out[name] = None
        # "drop", or a rule this code does not know: the column is left out, never kept in clear
    return out


def _printable(value: str) -> str:
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
