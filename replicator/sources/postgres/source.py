"""The PostgreSQL logical replication source: an initial snapshot, then the slot's change stream.

Positions (``Position.value``): ``<16 hex digits: commit LSN>.<12 hex digits: ordinal>``, upper-case and
fixed width, so plain string order is source order. Streamed changes use the LSN of their transaction's
commit record (pgoutput's Begin carries it up front) and their ordinal within the transaction, counting
every change of every table; a restart re-reads the same transactions and rebuilds the same positions.
Snapshot rows use ``consistent point - 1`` (every streamed commit is at or after the consistent point) and
their ordinal within the table's copy; ordinal 0 is a TRUNCATE that starts each table's copy, so a copy
redone after a crash replaces whatever an unfinished earlier copy staged.

Copies (``pg_copy``): the initial one reads every table under the slot's exported snapshot with several
worker threads (``copy_workers``) before streaming starts. A table added to the schemas later, or resynced,
is copied under a temporary slot's snapshot while the other tables keep streaming; what the slot streams
for it meanwhile is held back until its copy is out (at most ``Recopies.hold_rows`` changes or
``hold_bytes`` bytes in all: beyond that, streaming waits for the copy).

Acknowledgement: ``flush_lsn`` (what the slot may forget) is the end of the last transaction all of whose
changes, in every table, are acknowledged. A transaction that is only partly staged (a big one cut into
several batches) holds it before its own commit. When nothing is pending and the server sends only
keepalives (WAL of other databases), flush follows the server's position, so the slot never stalls.

Tables and their shapes come from the ``schemas/`` folder, which also says which tables to replicate; the
publication is created (or extended) with exactly those tables. A Relation message with a column the
schema lacks becomes a ``SchemaChange`` (type from the column's type OID).

Transactions are requested whole (protocol 1, no in-progress streaming): the server spills big ones to
disk and sends them at commit, rows flowing straight through the buffer into staged batches, so memory is
bounded and a rolled-back transaction never reaches us. The decoder also understands protocol 2 streaming.

Speed: plain rows (inserts, updates without an old tuple, deletes; no unchanged TOAST value) skip the
message objects and are collected per table as raw values, then yielded as ``ChangeChunk``s
(``pg_columns``); the rest goes the ``Change`` way.

Types (schema file type -> what the targets hold; values travel as PostgreSQL's own text output, and a
target that keeps text keeps exactly that text; table in README "PostgreSQL types"). The same type
everywhere: int2/int4/int8, bool, real/double (NaN, +-Infinity, -0), text/varchar/char(n) (padding kept),
date, time (24:00:00 too), timestamp, timestamptz (the instant, UTC), numeric(p,s) with p <= 38, uuid,
bytea. Dates and timestamps keep infinity, BC and five-digit years on PostgreSQL and DuckDB (Redshift has no
infinity: declare ``text`` there); a timestamp past 294247-01-10 does not fit 64-bit microseconds and stops
its table. Unbounded numeric (over 38 digits, NaN, Infinity): ``numeric`` keeps it on PostgreSQL; DuckDB
and Redshift have DECIMAL(38, s) only (10 places, no NaN): declare ``text`` there. oid -> oid, UINTEGER,
BIGINT. timetz -> timetz, DuckDB TIMETZ, Redshift text. interval, inet, cidr, macaddr, macaddr8, bit(n),
varbit(n), xml, point, line, lseg, box, path, polygon, circle, the range and multirange types, and arrays of
any type (``integer[]``: dimensions and bounds kept) -> the same type on PostgreSQL, text on DuckDB and
Redshift. money -> text (its text follows lc_monetary). json/jsonb -> jsonb on PostgreSQL (a json column's
spacing and duplicate keys are normalised), JSON on DuckDB, SUPER on Redshift. name, citext -> text (not
case-insensitive). Enums and other user-defined types: declare ``text`` (the label); a domain: declare its
base type (a column added later of such a type arrives as text). A value its declared type cannot hold stops
that table alone (``stop_table``).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

import psycopg2
import structlog

from replicator.model import Change, ChangeChunk, Column, Op, Position, SchemaChange, TableId, TableSchema
from replicator.obs import metrics
from replicator.schema import column_names_problem
from replicator.sources.postgres import pgoutput as pg
from replicator.sources.postgres.initial_copy import CopyRound, Recopies, TableCopied
from replicator.sources.postgres.readahead import ReadAhead
from replicator.sources.postgres.resync import STATE_PREFIX, load_state, save_state, stopped_tables
from replicator.sources.postgres.rows import (
    OPS,
    Rel,
    Txn,
    column_type,
    decode_position,
    encode_position,
    relation_shape,
    row_changes,
)
from replicator.sources.postgres.rowscan import COMPILED, Rows, SinkLike, scan
from replicator.sources.postgres.setup import (
    _DEFAULT_KINDS,
    SourceSetupError,
    drop_slot,
    ensure_publication,
    preflight,
    slot_exists,
    slot_invalidated,
    slot_lag_bytes,
    source_dsn,
    table_oids,
    unpublished,
    with_defaults,
)
from replicator.sources.postgres.stream import ReplicationStream
from replicator.sql import quote_table
from replicator.storage import ObjectStore

__all__ = [  # re-exported: these names were defined here before the module was split
    "STATE_PREFIX",
    "PostgresSource",
    "column_type",
    "decode_position",
    "encode_position",
]

log = structlog.get_logger(__name__)
_WAL_PAGE = 8192  # XLOG_BLCKSZ
_PAGE_HEADER = 40  # SizeOfXLogLongPHD: the largest WAL page header
_RELEASED = "~"  # sorts after every position: what ``_acked`` holds for a stopped table


_RENAME_TODO = "rename the column at the source, then: replicator resync {table}"


def _with_defaults(
    conn: psycopg2.extensions.connection, schema: TableSchema, added: Sequence[str]
) -> TableSchema:
    """``setup.with_defaults``, for a partitioned table too. PostgreSQL keeps the value that the rows already
    there hold for a column added with a constant DEFAULT (its "missing value") in each leaf partition; the
    partitioned table itself has none (no storage). Found by the fuzzer: such a column was NULL in the
    target's existing rows. The value is taken from the leaves when those that have one agree; leaves
    without one were created since (their rows were sent with the value) or rewritten since (as for a
    plain table: the values are in the rows, unseen)."""
    kinds = {c.name: c.type.kind for c in schema.columns}
    found = {
        name: value
        for name, value in _partition_missing_values(conn, schema.table, added).items()
        if kinds.get(name) in _DEFAULT_KINDS
    }
    if found:
        columns = (Column(c.name, c.type, c.nullable, found.get(c.name, c.default)) for c in schema.columns)
        schema = TableSchema(schema.table, tuple(columns), schema.primary_key)
    return with_defaults(conn, schema, [n for n in added if n not in found])


def _partition_missing_values(
    conn: psycopg2.extensions.connection, table: TableId, added: Sequence[str]
) -> dict[str, str]:
    """The missing value its leaf partitions agree on, per column of ``added`` that has one (empty unless
    ``table`` is partitioned)."""
    if conn.server_version < 120000 or not added:  # pg_partition_tree: 12 (partitioned sources need 13)
        return {}
    with conn.cursor() as cur:
        cur.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (quote_table(table),))
        row = cur.fetchone()
        if row is None or row[0] != "p":
            return {}
        cur.execute(
            "SELECT a.attname, array_agg(DISTINCT (a.attmissingval::text::text[])[1])"
            " FROM pg_partition_tree(%s::regclass) p JOIN pg_attribute a ON a.attrelid = p.relid"
            " WHERE p.isleaf AND a.attname = ANY(%s) AND a.atthasmissing AND NOT a.attisdropped"
            " GROUP BY a.attname",
            (quote_table(table), list(added)),
        )
        rows = cur.fetchall()
    return {name: values[0] for name, values in rows if len(values) == 1 and values[0] is not None}


def _stop_record(reason: str, detail: str, todo: str, position: str = "") -> dict[str, object]:
    """A stopped table's record, as ``problems()`` shows it and the state keeps it."""
    since = datetime.now(UTC).isoformat()
    return {"reason": reason, "position": position, "detail": detail, "since": since, "todo": todo}


def _missing_stop(table: TableId) -> dict[str, object]:
    """The stop of a table of the schema files that the source does not have (dropped or renamed)."""
    return _stop_record(
        "source_table_missing",
        f"{table} does not exist at the source (dropped or renamed?), or the source user cannot see it",
        f"recreate it at the source (or fix the schema file's name), then: replicator resync {table}; "
        "or remove its schema file",
    )


class PostgresSource:
    """``replicator.sources.base.Source`` over a pgoutput slot; see the module docstring."""

    waits_in_read = True  # ``Streaming``: a read waits until the stream has been quiet for idle_seconds

    def __init__(
        self,
        dsn: str,
        tables: Mapping[TableId, TableSchema],
        *,
        state: ObjectStore,
        slot: str = "replicator",
        publication: str = "replicator",
        create_slot: bool = True,
        create_publication: bool = True,
        idle_seconds: float = 0.3,
        status_interval: float = 10.0,
        keyless: Mapping[TableId, str] | None = None,
        copy_workers: int = 0,
        chunk_rows: int = 10_000,
    ) -> None:
        """Rows are handed on as soon as the replication socket has nothing more to read, or when a
        table has collected ``chunk_rows`` of them (the composition root passes ``batch.max_rows``), and a
        ``read`` ends once the stream has been quiet for ``idle_seconds`` (half of ``batch.max_age_seconds``
        there): how long changes wait is the buffer's business, never the source's.

        ``keyless``: per table, what to do when it has no primary key and no REPLICA IDENTITY FULL
        (``TableOptions.keyless``): ``insert_only`` (the default: a start-up warning, inserts replicate) or
        ``refuse`` (``SourceSetupError`` naming the fix). ``copy_workers``: tables copied at once (0: as
        many as there are cores, at most 4)."""
        self.dsn = dsn = source_dsn(dsn)
        self._schemas = dict(sorted(tables.items()))
        self.state = state
        self.slot = slot
        self.publication = publication
        self.create_slot = create_slot
        self.create_publication = create_publication
        self._conn = psycopg2.connect(dsn)
        self._conn.autocommit = True
        # A table gone from the source (dropped, renamed) stops alone: the others start (below).
        gone: list[TableId] = []
        unusable: dict[TableId, str] = {}
        self.checks = preflight(self._conn, list(self._schemas.values()), missing=gone, unusable=unusable)
        if gone and len(gone) == len(self._schemas):  # nothing at all to replicate: a configuration error
            self._conn.close()
            raise SourceSetupError(
                f"no table of the schema files exists at the source: {', '.join(map(str, gone))}"
            )
        policy = keyless or {}
        refused = [str(c.table) for c in self.checks if c.insert_only and policy.get(c.table) == "refuse"]
        if refused:
            self._conn.close()
            raise SourceSetupError(
                f"{', '.join(refused)}: no primary key and no replica identity, so updates and deletes "
                "cannot be replicated: ALTER TABLE ... REPLICA IDENTITY FULL (or add a primary key), or set "
                'keyless = "insert_only" in the table\'s schema file to replicate its inserts only'
            )
        present = [t for t in self._schemas if t not in gone and t not in unusable]
        # Tables put back into the publication: if the slot streamed them before, their changes while out
        # of it were never sent (``_prepare`` copies them again).
        self._republished = ensure_publication(self._conn, publication, present, create=create_publication)
        self._publication_checked = time.monotonic()
        self.publication_check_seconds = 10.0  # how often a streaming source checks its tables are published
        # Each table's relation OID now; one dropped and created again under its name has another, and
        # nothing in the stream says the old rows are gone (``_prepare`` and ``_relation`` compare).
        self._oids = table_oids(self._conn, present)
        self._recreated: set[TableId] = set()  # seen mid-stream: resynced when the read ends
        self.stream = ReplicationStream(
            dsn, slot, publication, status_interval=status_interval, idle_seconds=idle_seconds
        )
        self._reader = ReadAhead(self.stream, threaded=COMPILED)  # reads on while the pipeline stages, merges
        self._decoder = pg.Decoder()
        self._rels: dict[int, Rel | None] = {}
        self._txns: deque[Txn] = deque()
        self._txn: Txn | None = None
        self._acked: dict[TableId, str] = {}
        self._yielded: dict[TableId, str] = {}
        self._snapshot_pending: dict[TableId, str] | None = None
        self._ready = False
        self._collectors: dict[TableId, Rows] = {}  # plain rows not yet yielded, per table
        self.chunk_rows = chunk_rows  # a table's collected rows are yielded as one chunk at this many
        self.chunk_bytes = 4 << 20  # ... or at this many bytes of messages, whichever comes first
        self._collector_of: dict[int, Rows] = {}  # by relation id: the same as ``_collectors``
        self._sinks: dict[int, SinkLike] = {}  # by relation id: their sinks, for ``scan``
        self._owner: dict[SinkLike, Rows] = {}  # sink -> its collector
        self._serial = 0  # Begin messages seen: a sink ``scan`` appends to is begun for the current one
        self.copy_workers = copy_workers or min(4, os.cpu_count() or 1)
        self.copy_chunk_bytes = 4 << 20  # a copy's rows are handed on in chunks of about this much CSV
        # Tables stopped for bad input (``stop_table``), persisted in the state until a resync; their
        # relations wait in ``_parked`` meanwhile, so the stream skips their rows like an unknown table's.
        self._stopped = stopped_tables(load_state(state, slot), self._schemas)
        for table in gone:
            self._stopped.setdefault(table, _missing_stop(table))
            log.error("pg_table_stopped", table=str(table), **self._stopped[table])
        for table, why in unusable.items():
            self._stopped.setdefault(
                table, _stop_record("bad_column_name", why, _RENAME_TODO.format(table=table))
            )
            log.error("pg_table_stopped", table=str(table), **self._stopped[table])
        self._persist_stops = bool(gone or unusable)  # in the state once it is next written (``_prepare``)
        self._parked: dict[int, Rel] = {}
        self.recopies = Recopies(skip=self._stopped)  # tables added later or resynced, copied meanwhile
        self._read_seconds = self.stream.max_read_seconds
        self._drain_target: int | None = None  # the server's WAL end at ``mark_drain_point``
        self._drain_done = False  # ``drained`` said True: reads end on quiet again, not at the drain point

    # -- Source -------------------------------------------------------------------------------------------

    def schemas(self) -> Sequence[TableSchema]:
        return list(self._schemas.values())

    def read(self) -> Iterator[Change | SchemaChange | ChangeChunk]:
        if not self._ready:
            yield from self._prepare()
        copies = self.recopies
        if copies.todo and copies.round is None:
            workers, size = self.copy_workers, self.copy_chunk_bytes
            copies.start(self.dsn, self.slot, self._schemas, workers=workers, chunk_bytes=size)
            self.stream.max_read_seconds = min(self._read_seconds, 1.0)  # come back for the copy often
        if copies.round is not None:
            yield from self._copied(0)
        if copies.streaming_waits:
            if not copies.said_waiting:  # once a round: this branch runs every read until the copy is out
                copies.said_waiting = True
                tables = sorted(map(str, copies.todo))
                log.info("streaming_waits_for_copy", held=copies.held.rows, tables=tables)
            yield from self._copied(1.0)
        else:
            holding, held = copies.todo, copies.held
            for item in self._stream():
                if item.table in holding:
                    held.add(item)
                else:
                    yield item
        if copies.round is not None:
            yield from self._copied(0.5)  # an idle stream returns at once: give the copy its turn
        if self._txn is None and not self._txns and self._snapshot_pending is None:
            # Nothing pending: everything the server sent up to its position is handled (keepalive-only
            # periods, other databases' WAL), so the slot may move there.
            self.stream.confirm(self._reader.server_wal_end)
        self._report_lag()

    def ack(self, positions: Mapping[TableId, Position]) -> None:
        for table, position in positions.items():
            if position.value > self._acked.get(table, ""):
                self._acked[table] = position.value
        acked = self._acked
        self._release()
        if self._snapshot_pending is not None and all(
            acked.get(t, "") >= p for t, p in self._snapshot_pending.items()
        ):
            self._snapshot_pending = None
            self._save_state(done=True)
            log.info("snapshot_complete", slot=self.slot)
        copied = self.recopies.acknowledged(acked)
        if copied:
            self._save_state(done=self._snapshot_pending is None)
            log.info("resync_copy_staged", tables=sorted(map(str, copied)))

    def mark_drain_point(self) -> None:
        """``Drainable``: from now on ``drained`` means "everything up to the server's WAL end as of now"."""
        self._drain_target = self._server_lsn()
        self._drain_done = False

    def drained(self) -> bool:
        """``Drainable``: the walsender has sent everything up to the server's WAL end as of the drain point,
        and all of it is staged and acknowledged. A walsender decoding a large transaction sends nothing
        until its commit (minutes for a big one), so an idle read proves nothing; its sent position does.

        Each False asks the server for a keepalive (it carries that position). The drain point is the WAL
        insert position, which lies after a page header when the last record filled its page: then the
        sent position stops at the page's start, right before it.
        """
        if self._drain_target is None:
            self.mark_drain_point()
            return False
        if not self._txns and self._at_drain_point():
            self._drain_done = True
            return True
        self.stream.request_reply()
        return False

    def _at_drain_point(self) -> bool:
        """The walsender has sent everything up to the drain point (``--once``), and nothing is left open:
        no transaction, snapshot or copy. Staging and acknowledgement aside, that is ``drained``."""
        target = self._drain_target
        if target is None or not self._ready or self._snapshot_pending is not None:
            return False
        if self._txn is not None or self.recopies.todo or self.recopies.round is not None:
            return False
        sent = self._reader.server_wal_end
        return sent >= target or (sent % _WAL_PAGE == 0 and target - sent <= _PAGE_HEADER)

    def _slot_lost(self, why: str) -> None:
        """The slot that held this source's position is gone or can never stream again: the changes it held
        are lost. Only a copy of every table puts the target right: done at once with ``create_slot`` (the
        copy's TRUNCATE clears what the target holds); without it, start-up stops and says so."""
        detail = (
            f"replication slot {self.slot!r} is lost: {why}; the changes it held since its last confirmed"
            " position cannot be read"
        )
        if not self.create_slot:
            raise SourceSetupError(
                f"{detail}. Drop it (if it still exists) and set create_slot = true: a new slot is created"
                " and every table copied again"
            )
        metrics.ERRORS.labels(stage="source", kind="slot_lost").inc()
        log.error(
            "slot_lost", slot=self.slot, detail=detail, todo="a new slot is created, every table copied again"
        )

    def _server_lsn(self) -> int:
        with self._conn.cursor() as cur:
            cur.execute(
                # The insert position: it includes every commit made so far, also under
                # synchronous_commit = off (the write position may lag behind such commits).
                "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
                " ELSE pg_current_wal_insert_lsn() END"
            )
            row = cur.fetchone()
        return pg.parse_lsn(str(row[0])) if row and row[0] else 0

    def _release(self) -> None:
        """Forget the oldest transactions that are committed and whose changes are all acknowledged, and
        confirm the slot up to the end of the last of them."""
        acked = self._acked
        flush = 0
        while self._txns:
            txn = self._txns[0]
            if not txn.committed or any(acked.get(t, "") < p for t, p in txn.last.items()):
                break
            flush = txn.end_lsn
            self._txns.popleft()
            metrics.SOURCE_COMMIT_TO_STAGED_SECONDS.labels(slot=self.slot).set(
                max(0.0, (datetime.now(UTC) - txn.commit_time).total_seconds())
            )
        if flush:
            self.stream.confirm(flush)

    def close(self) -> None:
        self.recopies.close()
        self._reader.close()
        self.stream.close()
        self._conn.close()

    # -- start-up: slot and snapshot ------------------------------------------------------------------

    def _load_state(self) -> dict[str, object]:
        return load_state(self.state, self.slot)

    def _save_state(self, *, done: bool) -> None:
        save_state(
            self.state, self.slot, done=done, resync=self.recopies.wanted, tables=self._schemas,
            stopped=self._stopped, oids=self._oids,
        )  # fmt: skip

    def _prepare(self) -> Iterator[Change | ChangeChunk | SchemaChange]:
        state = self._load_state()
        exists = slot_exists(self._conn, self.slot)
        lost = slot_invalidated(self._conn, self.slot) if exists else None
        if lost is not None or (not exists and state.get("snapshot_done")):
            self._slot_lost(
                lost or "it no longer exists (dropped by hand, or a failover that did not keep it)"
            )
            if lost is not None:
                drop_slot(self._conn, self.slot)
                exists = False
        if exists and state.get("snapshot_done"):
            self.recopies.add(t for t in self._schemas if str(t) in state.get("resync", []))  # type: ignore[operator]
            missing = set(map(str, self._schemas)) - set(map(str, state.get("tables", [])))  # type: ignore[call-overload]
            if missing:
                # Added to the schemas (and so to the publication) since: each is copied on its own under a
                # fresh snapshot, exactly as a resync; the other tables keep their slot position, no re-copy.
                self.recopies.add(t for t in self._schemas if str(t) in missing)
                log.info("tables_added_copying", tables=sorted(missing))
                self._save_state(done=True)
            streamed = set(state.get("tables", []))  # type: ignore[call-overload]
            left = [t for t in self._republished if str(t) in streamed and str(t) not in missing]
            known = state.get("oids")
            known = known if isinstance(known, dict) else {}
            recreated = [
                t for t, oid in self._oids.items()
                if str(t) in known and known[str(t)] != oid and t not in left and t not in self._stopped
            ]  # fmt: skip
            if recreated:
                self._recreated_tables(recreated)
            if left:
                self._left_publication(left)
            elif self._persist_stops or recreated or set(map(str, self._oids)) - set(known):
                self._save_state(done=True)  # (also records the OIDs of a state written before they were)
            self._ready = True
            return
        if not self.create_slot:
            why = "has no completed snapshot" if exists else "does not exist"
            raise SourceSetupError(
                f"replication slot {self.slot!r} {why}; set create_slot = true to create it and copy"
            )
        if exists:
            # An earlier copy never finished: start over with a fresh slot and snapshot. The copy's leading
            # TRUNCATE clears what the unfinished one staged.
            log.warning("snapshot_restarted", slot=self.slot)
            drop_slot(self._conn, self.slot)
        self.recopies.clear()  # the full copy below covers them
        self._save_state(done=False)
        exported = self.stream.create_slot_exporting_snapshot()
        pending: dict[TableId, str] = {}
        workers, size = self.copy_workers, self.copy_chunk_bytes
        copy = CopyRound(
            self.dsn, self._schemas, snapshot=exported, workers=workers, chunk_bytes=size, skip=self._stopped
        )
        try:
            while not copy.finished:
                for item in copy.take(1.0):
                    if isinstance(item, SchemaChange):  # the table has columns the schema file lacks
                        self._schemas[item.table] = item.schema
                    if isinstance(item, TableCopied):
                        pending[item.table] = self._yielded[item.table] = item.last
                        log.info("table_copied", table=str(item.table), rows=item.rows,
                                 seconds=round(item.seconds, 2))  # fmt: skip
                    else:
                        yield item
        finally:
            copy.close()
        self._snapshot_pending = pending
        self.ack({})  # the pipeline may have acknowledged all of it already (batches staged on the way)
        self._ready = True

    # -- resync (``Resyncable``) ----------------------------------------------------------------------

    def resync_refusal(self, table: TableId) -> str | None:
        """Why ``table`` cannot be copied again now (None: it can): it does not exist at the source, or has
        a column the replicator cannot take (its copy would fail, again at every start)."""
        missing: list[TableId] = []
        unusable: dict[TableId, str] = {}
        if table in self._schemas:
            preflight(self._conn, [self._schemas[table]], missing=missing, unusable=unusable)
        if table not in self._schemas or missing:
            return str(_missing_stop(table)["detail"])
        return unusable.get(table)

    def resync(self, table: TableId) -> None:
        """Start ``table`` over: it is copied under a fresh snapshot while the others stream on.

        The snapshot is a temporary slot's, with consistent point C: the copy holds exactly the transactions
        committed before C, so the main slot's changes of ``table`` committed before C are dropped and those
        at or after C are held until the copy is out, then passed on (no gap, no double effect). The copy's
        positions (``C - 1``, ordinal 0 a TRUNCATE) sort after everything streamed before. The request is
        persisted until the copy is acknowledged, so a restart in between copies again.
        """
        refused = self.resync_refusal(table)
        if refused is not None:  # callers ask first; this keeps the table stopped, as it is
            if table not in self._stopped:  # dropped while streaming: nothing said so before
                self._stopped[table] = _missing_stop(table)
                self._save_state(done=self._ready and self._snapshot_pending is None)
            log.error("resync_refused", table=str(table), reason=refused)
            return
        # Recreated since it was dropped: a dropped table left the publication.
        ensure_publication(self._conn, self.publication, [table], create=self.create_publication)
        self._acked.pop(table, None)
        for txn in self._txns:
            txn.last.pop(table, None)  # its streamed changes are superseded: they no longer hold the slot
        if self._stopped.pop(table, None) is not None:
            self._unpark(table)
            log.info("table_stop_cleared", table=str(table), slot=self.slot)
        self.recopies.request(table)
        if self._ready or self._load_state().get("snapshot_done"):
            self._save_state(done=self._snapshot_pending is None)
        log.info("resync_requested", table=str(table), slot=self.slot)

    # -- bad input (``Stoppable``) ----------------------------------------------------------------------

    def problems(self) -> list[dict[str, object]]:
        """Tables stopped for bad input, each its ``stop_table`` record with ``table`` (for the operator)."""
        return [{"table": str(t), **v} for t, v in sorted(self._stopped.items())]

    def stop_table(
        self, table: TableId, *, reason: str, position: Position, detail: str, todo: str | None = None
    ) -> bool:
        """``Stoppable``: a value of ``table`` does not convert to its declared type. The table stops alone
        (always: returns True, so nothing of the batch is staged; the row is in the quarantine).

        The stop (reason, position, detail, since) is persisted in the slot's state and shown by
        ``replicator status``. From then on nothing of the table is yielded, and nothing of it holds the
        slot: its changes in open transactions, its initial or re-copy stop counting, so the slot keeps
        confirming for the other tables and pins no WAL (and is never dropped for it). A slot cannot replay
        one table, so the table's later changes are not kept: the way out is to fix the type in
        ``schemas/`` and ``replicator resync TABLE``, a fresh copy, which clears the stop.
        """
        if table not in self._schemas:
            return False
        todo = todo or f"fix the column's type in the schemas folder, then: replicator resync {table}"
        self._stopped[table] = _stop_record(reason, detail, todo, position.value)
        # Every position of it counts as acknowledged (above any real one), so no transaction, copy or
        # snapshot waits for it; ``resync`` forgets this.
        self._acked[table] = _RELEASED
        for txn in self._txns:
            txn.last.pop(table, None)
        for rel_id, rel in list(self._rels.items()):
            if rel is not None and rel.table == table:
                self._parked[rel_id], self._rels[rel_id] = rel, None
        rows = self._collectors.get(table)
        if rows is not None:
            rows.take(self._schemas[table])  # collected but not yielded: dropped with the rest
        self.recopies.stop(table)
        self._save_state(done=self._ready and self._snapshot_pending is None)
        metrics.ERRORS.labels(stage="source", kind=reason).inc()
        log.error("pg_table_stopped", table=str(table), position=position.value, reason=reason,
                  detail=detail, todo=f"{todo}; other tables go on")  # fmt: skip
        self.ack({})  # what only this table held back may be confirmed now
        return True

    def _unpark(self, table: TableId) -> None:
        for rel_id, rel in list(self._parked.items()):
            if rel.table == table:
                self._rels[rel_id] = self._parked.pop(rel_id)

    def _copied(self, wait: float) -> Iterator[Change | SchemaChange | ChangeChunk]:
        """What the running copy hands over, and the held changes it releases (see ``Recopies.take``)."""
        for item in self.recopies.take(wait, self._txns, self._yielded):
            if isinstance(item, SchemaChange):  # the table has columns the schema file lacks
                self._schemas[item.table] = item.schema
            yield item
        if self.recopies.round is None:  # the round is over
            self.stream.max_read_seconds = self._read_seconds
            self.ack({})

    # -- streaming ------------------------------------------------------------------------------------

    def _stream(self) -> Iterator[Change | SchemaChange | ChangeChunk]:
        """The slot's changes. Plain rows (inserts, updates without an old tuple, deletes; no unchanged
        TOAST value) skip the message objects: their raw values are collected per table and yielded as
        ``ChangeChunk``s. A table's collected rows are yielded before anything else of that table (a row
        ``Change``, TRUNCATE, schema change) and all of them before this returns, so each table's order
        holds; chunks of different tables may interleave, which the per-table buffer does not mind."""
        decoder = self._decoder
        decode = decoder.decode
        yielded = self._yielded
        rels = self._rels
        by_rel, sinks, owner = self._collector_of, self._sinks, self._owner
        limit, cap = self.chunk_rows, self.chunk_bytes
        full = self.stream.run_size
        touched: list[SinkLike] = []  # sinks that collected rows since the socket last drained
        txn = self._txn
        progress = False

        def caught_up() -> bool:
            # ``--once`` past its drain point: the read ends without waiting for idle_seconds of quiet (a
            # walsender that has sent everything says so in a keepalive). Only after some progress in this
            # read, or when everything is acknowledged: else each round would return at once, not wait.
            # Once ``drained`` has said so, reads wait for quiet again.
            if self._drain_done:
                return False
            return self._at_drain_point() and (progress or not self._txns)

        for run in self._reader.messages(until=caught_up):
            progress = True
            i, n = 0, len(run)
            while i < n:
                if txn is not None and not decoder.in_stream:
                    # The bulk of the rows: each table's plain rows after its first in the transaction.
                    i, txn.ordinal, filled = scan(
                        run, i, sinks, txn.ordinal, self._serial, touched, limit, cap
                    )
                    if filled is not None:
                        yield from self._flush(owner[filled].table)
                        continue
                    if i >= n:
                        break
                payload = run[i]
                i += 1
                tag = payload[0]
                if tag in OPS and not decoder.in_stream:  # 'I', 'U', 'D'
                    rel_id = int.from_bytes(payload[1:5])
                    rel = rels.get(rel_id)
                    if rel is None:
                        continue  # a table we do not replicate
                    assert txn is not None
                    rows = by_rel.get(rel_id)
                    if rows is None or rows.rel is not rel:
                        yield from self._flush(rel.table)  # rows of another shape go first
                        rows = self._rows_for(rel_id, rel)
                    txn.ordinal += 1
                    at = txn.prefix + f"{txn.ordinal:012X}"
                    # Collected rows count as yielded (``_flush`` records them in ``_yielded``).
                    if at <= (rows.last or yielded.get(rel.table, "")):
                        continue  # resent after a reconnect, and already yielded
                    sink = rows.sink
                    if sink.add(payload, txn.prefix, txn.ordinal):
                        if sink.serial != self._serial:
                            sink.begin(self._serial, txn.prefix)  # ``scan`` takes this table's next rows
                        if rows.txn is not txn:
                            rows.txn = txn
                            rows.starts.append((sink.rows - 1, txn))
                            txn.last[rel.table] = at  # raised to its last row by ``_flush``, before any ack
                        if sink.rows == 1:
                            touched.append(sink)
                        if sink.rows >= limit or sink.nbytes >= cap:
                            yield from self._flush(rel.table)
                        continue
                    txn.ordinal -= 1  # not plain: the row path numbers it
                    yield from self._flush(rel.table)
                msg = decode(payload)
                kind = type(msg)
                if kind is pg.Insert or kind is pg.Update or kind is pg.Delete:
                    assert txn is not None
                    for change in self._changes(msg, txn):  # type: ignore[arg-type]
                        if change.position.value <= yielded.get(change.table, ""):
                            continue  # resent after a reconnect, and already yielded
                        yielded[change.table] = txn.last[change.table] = change.position.value
                        yield change
                elif kind is pg.Begin:
                    assert isinstance(msg, pg.Begin)
                    self._serial += 1
                    if (
                        self._txns
                        and not self._txns[-1].committed
                        and self._txns[-1].final_lsn == msg.final_lsn
                    ):
                        txn = self._txns[-1]  # resent after a reconnect: numbered again from the start
                        txn.ordinal = 0
                    else:
                        txn = Txn(msg.final_lsn, msg.commit_time, prefix=f"{msg.final_lsn:016X}.")
                        self._txns.append(txn)
                    self._txn = txn
                elif kind is pg.Commit:
                    assert isinstance(msg, pg.Commit) and txn is not None
                    txn.end_lsn, txn.committed = msg.end_lsn, True
                    self._txn = txn = None
                    # Release what this commit completes, every time: its rows may all be staged and
                    # acknowledged already (a chunk its last row filled was staged before the Commit was
                    # decoded), and then no later ack would ever come for it while nothing else is written.
                    self._release()
                elif kind is pg.Relation:
                    assert isinstance(msg, pg.Relation)
                    at = txn.prefix + f"{txn.ordinal + 1:012X}" if txn is not None else ""
                    named = TableId(msg.namespace, msg.name)
                    before = self._rels.get(msg.relation_id)
                    if before is not None and before.table != named:
                        yield from self._flush(before.table)  # renamed: its rows under the old name first
                    yield from self._flush(named)  # rows of the shape before
                    schema_change = self._relation(msg, at)
                    if schema_change is not None:
                        yield schema_change
                elif kind is pg.Truncate:
                    assert isinstance(msg, pg.Truncate) and txn is not None
                    for rel_id in msg.relation_ids:
                        rel = self._rels.get(rel_id)
                        if rel is None:
                            continue
                        yield from self._flush(rel.table)
                        txn.ordinal += 1
                        value = txn.prefix + f"{txn.ordinal:012X}"
                        if value > yielded.get(rel.table, ""):
                            yielded[rel.table] = txn.last[rel.table] = value
                            yield Change(rel.table, Op.TRUNCATE, (), Position(value), txn.commit_time)
                # Origin, Type, logical messages: nothing to replicate (enums arrive as text either way).
            if len(run) < full and touched:
                # The socket is drained: nothing more to read right now. Hand on what was collected, so rows
                # wait in the buffer (whose age and size limits decide the batches), never here. Only the
                # tables that collected rows since (not every table's collector, at every drained run).
                sinks_touched, touched = touched, []
                for sink in sinks_touched:
                    if sink.rows:
                        yield from self._flush(owner[sink].table)
        for table in list(self._collectors):
            yield from self._flush(table)

    def _rows_for(self, rel_id: int, rel: Rel) -> Rows:
        """The (empty) collector of ``rel``'s table, shaped like ``rel``, its sink under ``rel_id``."""
        rows = self._collectors.get(rel.table)
        if rows is None:
            rows = self._collectors[rel.table] = Rows(rel.table, rel)
        elif rows.rel is not rel:
            old = rows.sink
            rows.reshape(rel)
            self._owner.pop(old, None)
            for other in [r for r, s in self._sinks.items() if s is old]:
                self._sinks[other] = rows.sink
        self._collector_of[rel_id] = rows
        self._sinks[rel_id] = rows.sink
        self._owner[rows.sink] = rows
        return rows

    def _flush(self, table: TableId) -> Iterator[ChangeChunk]:
        """The rows collected of ``table``, as one chunk (nothing when there are none)."""
        rows = self._collectors.get(table)
        if rows is None or not rows.sink.rows:
            return
        sink = rows.sink
        ends = [i for i, _ in rows.starts[1:]] + [sink.rows]
        for (_, txn), end in zip(rows.starts, ends, strict=True):
            txn.last[table] = sink.position(end - 1)  # what the slot waits for, per transaction
        self._yielded[table] = sink.position(-1)
        chunk = rows.take(self._schemas[table])
        if chunk is not None:
            yield chunk

    def _changes(self, msg: pg.Insert | pg.Update | pg.Delete, txn: Txn) -> list[Change]:
        """The changes one row message makes, numbered within ``txn``."""
        rel = self._rels.get(msg.relation_id)
        if rel is None:
            return []
        return row_changes(rel, msg, txn)

    def _relation(self, msg: pg.Relation, position: str) -> SchemaChange | None:
        table = TableId(msg.namespace, msg.name)
        known = self._rels.get(msg.relation_id) or self._parked.get(msg.relation_id)
        if known is not None and known.table != table:
            self._renamed(known.table, table, position)
        schema = self._schemas.get(table)
        if schema is None:
            self._rels[msg.relation_id] = None
            return None
        was = self._oids.get(table)
        if was is not None and was != msg.relation_id and table not in self._stopped:
            # Another relation under the name: created again since this source looked (then resynced when
            # this read ends, in ``_report_lag``), or the one before, whose changes from before the DROP
            # are still in the slot (then already being copied again: nothing more to do).
            now = table_oids(self._conn, [table]).get(table)
            if now is not None and now != was:
                self._oids[table] = now
                self._recreated.add(table)
        problem = column_names_problem(c.name for c in msg.columns)
        if problem is None:
            try:
                schema, added, rel = relation_shape(table, schema, msg)
            except ValueError as exc:  # another rule of TableSchema
                problem = str(exc)
        if problem is not None:
            # Before anything with that name is staged: the table stops alone (the others go on).
            if table not in self._stopped:
                self.stop_table(
                    table, reason="bad_column_name", position=Position(position),
                    detail=f"source columns: {problem}", todo=_RENAME_TODO.format(table=table),
                )  # fmt: skip
            self._rels[msg.relation_id] = None
            return None
        if table in self._stopped:
            self._parked[msg.relation_id], self._rels[msg.relation_id] = rel, None
        else:
            self._rels[msg.relation_id] = rel
        if not added:
            return None
        before = self._schemas[table]
        new = [n for n in added if n not in before.column_names]
        if new:
            schema = _with_defaults(self._conn, schema, new)
        self._schemas[table] = schema
        widened = {
            c.name: str(c.type) for c in schema.columns if c.name in added and c.name in before.column_names
        } or None
        log.info("source_columns_changed", table=str(table), columns=added, widened=widened)
        return SchemaChange(table, schema, Position(position))

    def _renamed(self, table: TableId, now: TableId, position: str) -> None:
        """A replicated table was renamed (or moved to another schema) at the source: pgoutput sends its
        changes under the new name from here on. Stopped, with that name: not taken for a table we do not
        replicate, which skipped its changes in silence while the slot moved past them."""
        if table in self._stopped:
            return
        self.stop_table(
            table, reason="source_table_renamed", position=Position(position),
            detail=f"{table} was renamed at the source to {now}; changes under that name are not replicated",
            todo=f"rename it back, or declare {now} in the schemas folder instead of {table}; "
            f"then: replicator resync {table}",
        )  # fmt: skip

    def _report_lag(self) -> None:
        if self._recreated:
            recreated, self._recreated = sorted(self._recreated, key=str), set()
            self._recreated_tables(recreated, streaming=True)
        try:
            lag = slot_lag_bytes(self._conn, self.slot)
            if time.monotonic() - self._publication_checked >= self.publication_check_seconds:
                self._check_publication()
        except psycopg2.Error:
            return
        if lag is not None:
            metrics.SOURCE_LAG_BYTES.labels(slot=self.slot).set(lag)

    def _check_publication(self) -> None:
        """Every ``publication_check_seconds`` while streaming: a replicated table taken out of the
        publication (``ALTER PUBLICATION ... DROP TABLE``, a publication re-created by hand) gets no more
        changes from the slot, and nothing in the stream says so. Put back and copied again (as a resync),
        or, without ``create_publication``, stopped with the way out."""
        self._publication_checked = time.monotonic()
        if not self._ready:
            return
        replicated = [t for t in self._schemas if t not in self._stopped]
        left = unpublished(self._conn, self.publication, replicated)
        if not left:
            return
        if not self.create_publication:
            for table in left:
                pub = self.publication
                self.stop_table(
                    table, reason="left_publication", position=Position(""),
                    detail=f"{table} is no longer in publication {pub!r}: the slot sends none of its changes",
                    todo=f"ALTER PUBLICATION {pub} ADD TABLE {table}; then: replicator resync {table}",
                )  # fmt: skip
            return
        self._left_publication(left, streaming=True)

    def _recreated_tables(self, tables: Sequence[TableId], *, streaming: bool = False) -> None:
        """Said loudly: ``tables`` were dropped and created again under their names (a migration, a
        ``pg_restore --clean``). A DROP sends no change, so the target still holds the old table's rows;
        each is copied again (while ``streaming``, as ``resync`` does; at start-up, as a table added)."""
        metrics.ERRORS.labels(stage="source", kind="table_recreated").inc(len(tables))
        log.error(
            "tables_recreated", tables=sorted(map(str, tables)),
            detail="dropped and created again at the source (a new relation): the target still holds the "
            "old table's rows, since a DROP sends no change; each is copied again",
        )  # fmt: skip
        if streaming:
            for table in tables:
                self.resync(table)
            return
        self.recopies.add(tables)

    def _left_publication(self, tables: Sequence[TableId], *, streaming: bool = False) -> None:
        """Said loudly: ``tables`` were out of the publication while the slot went on, so their changes of
        that time are lost to it; each is copied again (while ``streaming``, as ``resync`` does, which
        also puts it back into the publication; at start-up that was done before)."""
        metrics.ERRORS.labels(stage="source", kind="left_publication").inc(len(tables))
        log.error(
            "tables_left_publication", tables=sorted(map(str, tables)), publication=self.publication,
            detail="not in the publication for a while (ALTER PUBLICATION ... DROP TABLE?): the slot did not "
            "send their changes of that time; each is put back and copied again",
        )  # fmt: skip
        if streaming:
            for table in tables:
                self.resync(table)
            return
        self.recopies.add(tables)
        self._save_state(done=True)
