"""The SQL Server source: native change data capture tables, read through a DB-API connection (pymssql).

Per table: an initial load (the current rows, in primary key pages), then the capture instance's changes in
``__$start_lsn, __$seqval`` order, read in pages of ``page_rows`` so memory stays bounded. Queries live in
``replicator.sql.sqlserver``.

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
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog

from replicator.model import Change, Column, Op, Position, TableId, TableSchema
from replicator.obs import metrics
from replicator.sql import sqlserver as q
from replicator.store import ObjectStore

log = structlog.get_logger(__name__)

STATE_PREFIX = "_state/sqlserver/"
ZERO = bytes(10)
_OPS = {1: Op.DELETE, 2: Op.INSERT, 4: Op.UPDATE}


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


def encode_position(lsn: bytes, seqval: bytes, ordinal: int) -> Position:
    return Position(f"{lsn.hex()}:{seqval.hex()}:{ordinal:012x}")


def decode_position(position: str) -> tuple[bytes, bytes, int]:
    lsn, seqval, ordinal = position.split(":")
    return bytes.fromhex(lsn), bytes.fromhex(seqval), int(ordinal, 16)


def next_seqval(seqval: bytes) -> bytes:
    """The smallest binary(10) above ``seqval`` (binary values compare as big-endian numbers)."""
    return (int.from_bytes(seqval, "big") + 1).to_bytes(10, "big")


def to_wire(value: object) -> str | None:
    """A pymssql value as the wire text ``replicator.types.text_to_arrow`` parses."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):  # bit; before int, bool is an int
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | dtime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return "\\x" + bytes(value).hex()
    if isinstance(value, int | float | uuid.UUID):
        return str(value)
    return str(value)


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
class _Table:
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

    @property
    def key(self) -> str:
        return f"{STATE_PREFIX}{self.schema.table.schema}.{self.schema.table.name}.json"


class SqlServerSource:
    """Reads SQL Server CDC change tables per table, in order; see the module docstring for positions."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        tables: Mapping[TableId, TableSchema],
        *,
        state: ObjectStore,
        options: SqlServerOptions = SqlServerOptions(),  # frozen: one shared default is safe
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
        self._tables: dict[TableId, _Table] = {}
        for tid, schema in sorted(tables.items()):
            t = _Table(schema, options.capture_instances.get(tid, f"{tid.schema}_{tid.name}"))
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
        problems: list[str] = []
        resync: list[str] = []
        rows = self._query(q.database_cdc_enabled())
        if not rows or not rows[0][1]:
            name = rows[0][0] if rows else "?"
            raise SqlServerSourceError(
                f"change data capture is not enabled for database {name}: run EXEC sys.sp_cdc_enable_db"
            )
        instances = {r[0]: (r[1], r[2], bool(r[3])) for r in self._query(q.capture_instances())}
        for tid, t in self._tables.items():
            found = instances.get(t.ci)
            if found is None or (found[0], found[1]) != (tid.schema, tid.name):
                problems.append(
                    f"{tid}: no capture instance {t.ci!r} on this table; run EXEC sys.sp_cdc_enable_table "
                    f"@source_schema = N'{tid.schema}', @source_name = N'{tid.name}', "
                    f"@role_name = NULL, @capture_instance = N'{t.ci}'"
                    + (", @supports_net_changes = 1" if self.options.net_changes else "")
                    + " (or name its capture instance in source.sqlserver.capture_instances)"
                )
                continue
            if self.options.net_changes and not found[2]:
                problems.append(f"{tid}: capture instance {t.ci!r} does not support net changes")
            problems.extend(self._compare_schema(t))
            captured = {r[0] for r in self._query(q.captured_columns(t.ci))}
            missing = [c for c in t.schema.column_names if c not in captured]
            if missing:
                problems.append(
                    f"{tid}: capture instance {t.ci!r} does not capture column(s) {missing}; columns added "
                    "after a capture instance was created need a new capture instance"
                )
            elif t.next_lsn is not None:
                try:
                    self._check_not_expired(t, t.next_lsn)
                except NeedsResync as exc:
                    resync.append(str(exc))
        if self.options.check_capture_job:
            jobs = self._query(q.capture_job())
            if not jobs:
                problems.append("the database has no CDC capture job (msdb.dbo.cdc_jobs): run EXEC "
                                "sys.sp_cdc_add_job @job_type = N'capture'")  # fmt: skip
            elif not any(r[1] for r in jobs):
                problems.append("the CDC capture job is not running: start SQL Server Agent, or EXEC "
                                "sys.sp_cdc_start_job @job_type = N'capture'")  # fmt: skip
        if problems:
            raise SqlServerSourceError("SQL Server source: " + "; ".join(problems + resync))
        if resync:
            raise NeedsResync("SQL Server source: " + "; ".join(resync))

    def _compare_schema(self, t: _Table) -> list[str]:
        """Catalog columns the source table lacks are problems; differing types are logged only (the
        catalog may widen a type on purpose)."""
        source = {r[0]: r for r in self._query(q.table_columns(t.schema.table))}
        if not source:
            return [f"{t.schema.table}: no such table in the source database"]
        problems = []
        for col in t.schema.columns:
            r = source.get(col.name)
            if r is None:
                problems.append(f"{t.schema.table}: column {col.name} is not in the source table")
                continue
            try:
                mapped = q.logical_type(r[1], r[2], r[3], r[4])
            except ValueError as exc:
                problems.append(f"{t.schema.table}: column {col.name}: {exc}")
                continue
            if mapped != col.type:
                log.warning("sqlserver_type_differs", table=str(t.schema.table), column=col.name,
                            source=str(mapped), catalog=str(col.type))  # fmt: skip
        return problems

    def source_schema(self, table: TableId) -> TableSchema:
        """The table as SQL Server describes it (INFORMATION_SCHEMA), in replicator types."""
        rows = self._query(q.table_columns(table))
        if not rows:
            raise SqlServerSourceError(f"{table}: no such table in the source database")
        pk = tuple(r[0] for r in self._query(q.primary_key(table)))
        cols = tuple(Column(r[0], q.logical_type(r[1], r[2], r[3], r[4]), r[5] == "YES") for r in rows)
        return TableSchema(table, cols, pk)

    def _check_not_expired(self, t: _Table, lsn: bytes) -> bytes:
        low = self._scalar(q.min_lsn(t.ci))
        if low == ZERO:
            raise SqlServerSourceError(f"{t.schema.table}: capture instance {t.ci!r} no longer exists")
        if lsn < low:
            raise NeedsResync(
                f"{t.schema.table} needs a resync: its position (LSN 0x{lsn.hex()}) is older than the oldest "
                f"change capture instance {t.ci!r} still holds (0x{low.hex()}), so changes were cleaned up "
                f"before they were read. Truncate the target table, delete {t.key} from the staging store "
                "and restart: the table is then loaded again from a fresh snapshot"
            )
        return low

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
                t.failed = str(exc)
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

    def _read_table(self, t: _Table, high: bytes) -> Iterator[Change]:
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

    def _begin(self, t: _Table, high: bytes) -> None:
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

    def _snapshot(self, t: _Table) -> Iterator[Change]:
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

    def _all(self, t: _Table, high: bytes) -> Iterator[Change]:
        if t.cur_lsn > high:
            t.caught_up = True
            return
        t.caught_up = False
        self._check_not_expired(t, t.cur_lsn)
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
                    Change(t.schema.table, _OPS[op], values, encode_position(lsn, seqval, 1), commit)
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

    def _net(self, t: _Table, high: bytes) -> Iterator[Change]:
        if t.range is None or t.caught_up:
            if t.last_yielded > t.acked:
                return  # a new range starts only once the last one is staged (its ordinals restart)
            if t.cur_lsn > high:
                t.caught_up = True
                return
            t.range, t.offset, t.after = (t.cur_lsn, high), 0, ""
        t.caught_up = False
        self._check_not_expired(t, t.range[0])
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
                yield Change(t.schema.table, _OPS[op], tuple(to_wire(v) for v in data), pos,
                             self._commit_time(when))  # fmt: skip
            if len(rows) < limit:
                break
        t.cur_lsn, t.cur_seq = self._scalar(q.increment_lsn(t.range[1])), ZERO
        t.caught_up = True

    def _commit_time(self, when: object) -> datetime | None:
        if not isinstance(when, datetime):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=self._zone)
        return when.astimezone(UTC)

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

    # -- state --------------------------------------------------------------------------------------------

    def _load(self, t: _Table) -> None:
        try:
            doc = json.loads(self.state.get(t.key))
        except KeyError:
            return
        if doc.get("capture_instance") != t.ci:
            raise SqlServerSourceError(
                f"{t.schema.table}: its position belongs to capture instance "
                f"{doc.get('capture_instance')!r}, not {t.ci!r}; LSNs of different capture instances "
                "are not comparable. Resync the table "
                f"(delete {t.key} from the staging store) or configure the old capture instance"
            )
        t.next_lsn = bytes.fromhex(doc["next_lsn"]) if doc.get("next_lsn") else None
        if doc.get("range_to") and t.next_lsn is not None:
            t.range = (t.next_lsn, bytes.fromhex(doc["range_to"]))
        t.acked = t.after = doc.get("acked") or ""
        t.snapshot = doc.get("snapshot")
        t.cur_lsn = t.next_lsn or ZERO
        if t.snapshot is not None and not t.snapshot["done"]:
            t.snap_ordinal = int(t.snapshot["rows"])
            t.snap_after = t.snapshot["after_key"]
        elif t.acked and not self.options.net_changes:
            lsn, seqval, _ = decode_position(t.acked)
            if lsn == t.next_lsn:
                t.cur_seq = seqval  # resume inside the transaction at next_lsn, after what is acked
        if t.range is not None:
            # The same range pages the same way: continue right after the acknowledged row.
            t.offset = decode_position(t.acked)[2] if t.acked and t.acked[:20] >= t.range[0].hex() else 0
        t.last_yielded = t.acked

    def _pending_range_to(self, t: _Table) -> str | None:
        """Net changes: the end of the range read but not staged whole; a restart reads it again."""
        if not self.options.net_changes or t.range is None or t.next_lsn != t.range[0]:
            return None
        return t.range[1].hex()

    def _save(self, t: _Table) -> None:
        doc = {
            "version": 1,
            "table": str(t.schema.table),
            "capture_instance": t.ci,
            "next_lsn": t.next_lsn.hex() if t.next_lsn is not None else None,
            "range_to": self._pending_range_to(t),
            "acked": t.acked,
            "snapshot": t.snapshot,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        self.state.put(t.key, json.dumps(doc, indent=1).encode())
        t.saved_at = self._clock()
