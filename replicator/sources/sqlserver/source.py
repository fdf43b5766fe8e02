"""The SQL Server source: native change data capture tables, read through a DB-API connection (pymssql).

Per table: an initial load (the current rows, in primary key pages), then the capture instance's changes in
``__$start_lsn, __$seqval`` order, read in pages of ``page_rows`` so memory stays bounded. Queries live in
``replicator.sources.sqlserver.queries``.

Positions (``Position.value``): ``<start_lsn>:<seqval>:<ordinal>``, 20, 20 and 12 lower-case hex digits, so
string order is source order.

- change (all changes): ``(__$start_lsn, __$seqval, 1)``; an update that moved the primary key also yields a
  delete of the old key at ordinal ``0`` just before it (op 3, the old image, is never a change of its own).
- change (net changes): ``(__$start_lsn, 0, n)``, ``n`` the row's number in its LSN range, which is kept
  (``range_to``) until the range is staged, so a restart pages the very same result.
- initial load: ``(S, 0, n)``: ``S`` is ``sys.fn_cdc_get_max_lsn()`` read *before* the first row, ``n`` the
  row's number. Changes are read from ``sys.fn_cdc_increment_lsn(S)``: a change committed while the load ran
  may be both in the load and replayed after it; replaying full row images in order converges.

Progress (``_state/sqlserver/<schema>.<table>.json`` in the staging store, written after each ack)::

    {"version": 1, "table": "dbo.t", "capture_instance": "dbo_t", "next_lsn": "<hex>", "range_to": null,
     "acked": "<position>", "snapshot": {"lsn": "<hex>", "rows": 42, "after_key": ["42"], "done": false}}

``next_lsn`` is the first LSN not wholly staged: a restart reads from it, skipping positions up to
``acked``. Once everything through the read's upper LSN ``T`` is acked it becomes
``sys.fn_cdc_increment_lsn(T)``. If cleanup has moved ``sys.fn_cdc_get_min_lsn`` past it, changes were
lost: the table needs a resync and says so; it is never skipped silently.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from replicator.model import Change, Op, Position, TableId, TableSchema
from replicator.obs import metrics
from replicator.sources.sqlserver import queries as q
from replicator.sources.sqlserver.checks import check_not_expired, check_source, source_schema
from replicator.sources.sqlserver.state import (
    STATE_PREFIX,
    Connection,
    Cursor,
    NeedsResync,
    SqlServerOptions,
    SqlServerSourceError,
    TableState,
    load_state,
    mark_stopped,
    state_doc,
)
from replicator.sources.sqlserver.values import (
    OPS,
    ZERO,
    commit_time,
    decode_position,
    encode_position,
    next_seqval,
    to_wire,
)
from replicator.storage import ObjectStore

__all__ = [  # re-exported: these names were defined here before the module was split
    "STATE_PREFIX",
    "ZERO",
    "Connection",
    "Cursor",
    "NeedsResync",
    "SqlServerOptions",
    "SqlServerSource",
    "SqlServerSourceError",
    "decode_position",
    "encode_position",
    "next_seqval",
    "to_wire",
]

log = structlog.get_logger(__name__)

_DEFAULT_OPTIONS = SqlServerOptions()  # frozen: one shared default is safe


class SqlServerSource:
    """Reads SQL Server CDC change tables per table, in order; see the module docstring for positions."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        tables: Mapping[TableId, TableSchema],
        *,
        state: ObjectStore,
        options: SqlServerOptions = _DEFAULT_OPTIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if options.page_rows < 2:
            raise ValueError("page_rows must be at least 2 (an update's two images are read together)")
        self._connect = connect
        self._conn: Connection | None = None
        self.state = state
        self.options = options
        self._clock = clock
        self._zone = ZoneInfo(options.server_time_zone)
        self._tables: dict[TableId, TableState] = {}
        for tid, schema in sorted(tables.items()):
            t = TableState(schema, options.capture_instances.get(tid, f"{tid.schema}_{tid.name}"))
            self._load(t)
            self._tables[tid] = t
        self._idle_delay = 0.0
        self._next_poll = 0.0
        self._yielded = 0
        self.check()

    # -- start-up checks ----------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise ``SqlServerSourceError`` naming every problem: CDC off, capture instances or captured
        columns missing, capture job not running, stored positions the capture instance no longer holds."""
        check_source(self._query, self._scalar, self._tables, self.options)

    def source_schema(self, table: TableId) -> TableSchema:
        """The table as SQL Server describes it (INFORMATION_SCHEMA), in replicator types."""
        return source_schema(self._query, table)

    # -- Source -------------------------------------------------------------------------------------------

    def schemas(self) -> Sequence[TableSchema]:
        return [t.schema for t in self._tables.values()]

    def read(self) -> Iterator[Change]:
        """Changes after what was read before; returns when caught up. Idle polls back off."""
        now = self._clock()
        if now < self._next_poll:
            return
        self._yielded = 0
        try:
            high = self._scalar(q.max_lsn())
        except Exception as exc:
            self._failed_round("max_lsn", exc)
            return
        for t in self._tables.values():
            if t.failed:
                continue
            try:
                yield from self._read_table(t, high)
            except NeedsResync as exc:
                mark_stopped(t, str(exc))
                self._save(t)
                metrics.ERRORS.labels(stage="source", kind="NeedsResync").inc()
                log.error("sqlserver_needs_resync", table=str(t.schema.table), error=str(exc))
            except Exception as exc:
                # One table's trouble must not stop the others; its cursor is unchanged, so the next read()
                # retries from the same point and nothing is skipped.
                self._failed_round(str(t.schema.table), exc)
        if self._yielded:
            self._idle_delay = 0.0
        else:
            self._idle_delay = min(
                self.options.max_poll_interval_seconds,
                max(self.options.poll_interval_seconds, self._idle_delay * 2),
            )
        self._next_poll = self._clock() + self._idle_delay

    def ack(self, positions: Mapping[TableId, Position]) -> None:
        """Record that every change of each table up to its position is staged; persist it. Idempotent."""
        for tid, pos in positions.items():
            t = self._tables.get(tid)
            if t is None or pos.value <= t.acked:
                continue
            t.acked = pos.value
            lsn, seqval, ordinal = decode_position(pos.value)
            snap = t.snapshot
            if snap is not None and not snap["done"] and lsn.hex() == snap["lsn"] and seqval == ZERO:
                while t.snap_keys and t.snap_keys[0][0] <= ordinal:
                    _, key = t.snap_keys.popleft()
                    snap["after_key"] = key
                snap["rows"] = ordinal
                snap["done"] = t.snap_complete and ordinal >= t.snap_ordinal
            else:
                if snap is not None:
                    snap["done"] = True
                if t.caught_up and pos.value >= t.last_yielded:
                    t.next_lsn = t.cur_lsn  # everything read is staged
                elif self.options.net_changes and t.range is not None:
                    t.next_lsn = t.range[0]  # the range is read again, the same way, until staged whole
                else:
                    t.next_lsn = lsn
            self._save(t)

    def close(self) -> None:
        self._disconnect()

    # -- reading ------------------------------------------------------------------------------------------

    def _read_table(self, t: TableState, high: bytes) -> Iterator[Change]:
        if t.next_lsn is None:
            self._begin(t, high)
        snap = t.snapshot
        if snap is not None and not snap["done"] and not t.snap_complete:
            yield from self._snapshot(t)
        if self.options.net_changes:
            yield from self._net(t, high)
        else:
            yield from self._all(t, high)
        idle = t.caught_up and (not t.last_yielded or t.acked >= t.last_yielded) and t.next_lsn != t.cur_lsn
        if idle and self._clock() - t.saved_at >= self.options.idle_save_seconds:
            # Nothing waits for an ack: the resume point may move up to the read point. Saved now and
            # then only, so an idle table costs no write per poll yet never falls behind cleanup.
            t.next_lsn = t.cur_lsn
            self._save(t)

    def _begin(self, t: TableState, high: bytes) -> None:
        """First read of a table: the load's LSN, then where changes start."""
        low = self._scalar(q.min_lsn(t.ci))
        if low == ZERO:
            raise SqlServerSourceError(f"{t.schema.table}: capture instance {t.ci!r} does not exist")
        if self.options.initial_load:
            start = max(self._scalar(q.increment_lsn(high)), low)
            t.snapshot = {"lsn": high.hex(), "rows": 0, "after_key": None, "done": False}
        else:
            start = low
        t.next_lsn = t.cur_lsn = start
        self._save(t)
        log.info("sqlserver_table_started", table=str(t.schema.table), initial_load=self.options.initial_load,
                 snapshot_lsn=high.hex(), from_lsn=start.hex())  # fmt: skip

    def _snapshot(self, t: TableState) -> Iterator[Change]:
        snap = t.snapshot
        assert snap is not None
        s_lsn = bytes.fromhex(snap["lsn"])
        names, pk = t.schema.column_names, t.schema.primary_key
        key_idx = [names.index(k) for k in pk]
        while True:
            rows = self._query(
                q.snapshot_page(t.schema.table, names, pk, after=t.snap_after, limit=self.options.page_rows)
            )
            for row in rows:
                values = tuple(to_wire(v) for v in row)
                t.snap_ordinal += 1
                key = [values[i] for i in key_idx]
                t.snap_keys.append((t.snap_ordinal, key))
                t.snap_after = key
                t.last_yielded = encode_position(s_lsn, ZERO, t.snap_ordinal).value
                self._yielded += 1
                yield Change(t.schema.table, Op.INSERT, values, Position(t.last_yielded))
            if len(rows) < self.options.page_rows:
                break
        t.snap_complete = True
        if t.snap_ordinal == snap["rows"]:  # nothing (more) to ack: an empty table is loaded already
            snap["done"] = True
            self._save(t)
        log.info("sqlserver_initial_load_read", table=str(t.schema.table), rows=t.snap_ordinal)

    def _all(self, t: TableState, high: bytes) -> Iterator[Change]:
        if t.cur_lsn > high:
            t.caught_up = True
            return
        t.caught_up = False
        check_not_expired(self._scalar, t, t.cur_lsn)
        names = t.schema.column_names
        key_idx = [names.index(k) for k in t.schema.primary_key]
        limit = self.options.page_rows
        while True:
            rows = self._query(
                q.all_changes_page(
                    t.ci, names, from_lsn=t.cur_lsn, to_lsn=high, from_seqval=t.cur_seq, limit=limit
                )
            )
            full = len(rows) == limit
            if full and rows[-1][2] == 3:
                rows = rows[:-1]  # an old image whose new image is on the next page: read them together
            old: tuple[str | None, ...] | None = None
            for lsn, seqval, op, when, *data in rows:
                if op == 3:
                    old = tuple(to_wire(v) for v in data)
                    continue
                values = tuple(to_wire(v) for v in data)
                commit = self._commit_time(when)
                changes: list[Change] = []
                if op == 4 and old is not None and [old[i] for i in key_idx] != [values[i] for i in key_idx]:
                    # The update moved the key: the old key's row goes away first.
                    changes.append(Change(t.schema.table, Op.DELETE, old, encode_position(lsn, seqval, 0),
                                          commit))  # fmt: skip
                changes.append(
                    Change(t.schema.table, OPS[op], values, encode_position(lsn, seqval, 1), commit)
                )
                old = None
                t.cur_lsn, t.cur_seq = lsn, next_seqval(seqval)
                for c in changes:
                    if c.position.value > t.after:
                        t.after = t.last_yielded = c.position.value
                        self._yielded += 1
                        yield c
            if not full:
                break
        t.cur_lsn, t.cur_seq = self._scalar(q.increment_lsn(high)), ZERO
        t.caught_up = True

    def _net(self, t: TableState, high: bytes) -> Iterator[Change]:
        if t.range is None or t.caught_up:
            if t.last_yielded > t.acked:
                return  # a new range starts only once the last one is staged (its ordinals restart)
            if t.cur_lsn > high:
                t.caught_up = True
                return
            t.range, t.offset, t.after = (t.cur_lsn, high), 0, ""
        t.caught_up = False
        check_not_expired(self._scalar, t, t.range[0])
        names = t.schema.column_names
        limit = self.options.page_rows
        while True:
            rows = self._query(
                q.net_changes_page(
                    t.ci,
                    names,
                    t.schema.primary_key,
                    from_lsn=t.range[0],
                    to_lsn=t.range[1],
                    offset=t.offset,
                    limit=limit,
                )
            )
            for lsn, op, when, *data in rows:
                t.offset += 1
                pos = encode_position(lsn, ZERO, t.offset)
                if pos.value <= t.after:
                    continue
                t.after = t.last_yielded = pos.value
                self._yielded += 1
                yield Change(t.schema.table, OPS[op], tuple(to_wire(v) for v in data), pos,
                             self._commit_time(when))  # fmt: skip
            if len(rows) < limit:
                break
        t.cur_lsn, t.cur_seq = self._scalar(q.increment_lsn(t.range[1])), ZERO
        t.caught_up = True

    def _commit_time(self, when: object) -> datetime | None:
        return commit_time(when, self._zone)

    # -- connection ---------------------------------------------------------------------------------------

    def _query(self, query: q.Query) -> list[tuple[Any, ...]]:
        if self._conn is None:
            self._conn = self._connect()
        cur = self._conn.cursor()
        try:
            if query.params:
                cur.execute(query.sql, dict(query.params))
            else:
                cur.execute(query.sql)  # no parameters: pymssql then leaves the text as it is
            return cur.fetchall()
        finally:
            cur.close()

    def _scalar(self, query: q.Query) -> bytes:
        """The one LSN the query returns (all zeros for NULL)."""
        rows = self._query(query)
        value = rows[0][0] if rows else None
        return bytes(value) if value is not None else ZERO

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close; dropped anyway
                self._conn.close()
            self._conn = None

    def _failed_round(self, where: str, exc: Exception) -> None:
        metrics.ERRORS.labels(stage="source", kind=type(exc).__name__).inc()
        log.error("sqlserver_read_failed", table=where, error=f"{type(exc).__name__}: {exc}")
        self._disconnect()  # a fresh connection next time: the old one may be broken

    def problems(self) -> list[dict[str, Any]]:
        """Tables stopped until an operator loads them again, each its record with ``table``."""
        return [{"table": str(tid), **t.stopped} for tid, t in self._tables.items() if t.stopped is not None]

    # -- state --------------------------------------------------------------------------------------------

    def _load(self, t: TableState) -> None:
        load_state(self.state, t, net_changes=self.options.net_changes)

    def _save(self, t: TableState) -> None:
        self.state.put(t.key, state_doc(t, net_changes=self.options.net_changes))
        t.saved_at = self._clock()
