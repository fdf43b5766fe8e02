"""The replication connection: the message stream and feedback (set-up checks are in ``pg_setup``).

Feedback contract: the server is told ``flush_lsn`` = what the source says is durably staged (``confirm``),
never more (psycopg2 itself moves it to a keepalive's WAL end only when everything received is confirmed:
nothing of ours lies in between). Standby status updates go out at least every ``status_interval`` seconds
(shortened to a third of the server's ``wal_sender_timeout``, read on connecting) for as long as the
connection streams, whatever the pipeline does: while ``messages`` is iterated it sends them (and psycopg2
answers keepalive requests); between two reads, and while a suspended ``messages`` waits for its caller
(staging, long merges), a daemon thread owned by the stream sends them. That thread only writes status
updates, never reads: data and keepalives wait in the socket for the next ``messages``; the walsender's
timeout counts only what it hears from us, so the connection survives merges of any length.

Threads: psycopg2 cursors are not thread-safe, so every use of the connection or the cursor, and the
fields the thread reads (``_streaming``, ``_broken``, ``flush_lsn``, ``_last_status``), happen under
``_lock``, held for one cursor call or one run of reads, never across a ``yield``, a ``select`` or a sleep.
The thread never reconnects or closes: a failed update is logged and counted, marks the connection
broken, and the next ``messages`` reconnects (with backoff and jitter, resuming from the confirmed
position). ``close`` stops and joins it; while reconnecting it has nothing to send and waits.
"""

from __future__ import annotations

import contextlib
import random
import re
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import structlog

from replicator.obs import metrics
from replicator.sources.postgres.pgoutput import lsn_text, parse_lsn
from replicator.sql import quote_ident

log = structlog.get_logger(__name__)
_NOT_IN_STATE = "55000"  # SQLSTATE object_not_in_prerequisite_state (an invalidated slot, wal_level...)


_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float | None:
    """Seconds in a time setting as ``SHOW`` prints it (``1min``, ``500ms``, ``0``; no unit: ms)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text)
    if found is None or found[2] not in _UNIT_SECONDS:
        return None
    return float(found[1]) * _UNIT_SECONDS[found[2]]


class ReplicationStream:
    """One logical replication connection. ``messages`` yields runs of payloads until idle; see the module
    docstring for the feedback contract and the lock."""

    def __init__(
        self,
        dsn: str,
        slot: str,
        publication: str,
        *,
        status_interval: float = 10.0,
        idle_seconds: float = 0.3,
        max_backoff: float = 30.0,
        max_read_seconds: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.slot = slot
        self.publication = publication
        self.status_interval = status_interval
        self.idle_seconds = idle_seconds
        self.max_backoff = max_backoff
        self.max_read_seconds = max_read_seconds  # return now and then under endless load: the caller's turn
        self.flush_lsn = 0  # what we confirm; only ever moves forward
        self.received_lsn = 0
        self.run_size = 512  # messages read per step of ``messages`` at most ...
        # ... or payload bytes (the message that reaches it included): 512 rows of 1 MB values read at once
        # would hold half a GB. Small rows end a run by count long before.
        self.run_bytes = 4 << 20
        self.reconnects = 0
        self.thread_updates = 0  # status updates the thread sent (the pipeline was busy elsewhere)
        self._lock = threading.Lock()
        self._conn: psycopg2.extras.LogicalReplicationConnection | None = None
        self._cur: psycopg2.extras.ReplicationCursor | None = None
        self._streaming = False
        self._broken = False  # a status update failed: the next ``messages`` reconnects
        self._last_status = 0.0
        self._interval = status_interval  # effective: at most a third of the server's wal_sender_timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- set-up ---------------------------------------------------------------------------------------

    def _connect(self) -> psycopg2.extras.ReplicationCursor:
        conn = psycopg2.connect(self.dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        cur = conn.cursor()
        timeout: float | None = None
        try:
            # Before anything else: after CREATE_REPLICATION_SLOT any command ends the exported snapshot.
            cur.execute("SHOW wal_sender_timeout")
            row = cur.fetchone()
            timeout = parse_duration(str(row[0])) if row else None
        except (psycopg2.ProgrammingError, psycopg2.NotSupportedError):
            pass  # not answerable here: keep the configured interval
        # The walsender asks for a reply at half its timeout and gives up at the whole: stay well inside.
        self._interval = min(self.status_interval, timeout / 3) if timeout else self.status_interval
        with self._lock:
            self._conn, self._cur = conn, cur
        return cur

    def create_slot_exporting_snapshot(self) -> tuple[int, str]:
        """Create the slot and keep its exported snapshot alive: (consistent point, snapshot name).

        The snapshot is valid until this connection runs its next command (``start``), so the caller copies
        the tables in between. Changes committed after the consistent point come through the slot; the
        snapshot sees exactly those committed before it: no gap, no overlap.
        """
        cur = self._connect()
        with self._lock:
            cur.execute(f"CREATE_REPLICATION_SLOT {quote_ident(self.slot)} LOGICAL pgoutput EXPORT_SNAPSHOT")
            row = cur.fetchone()
        assert row is not None
        _name, consistent_point, snapshot, _plugin = row
        log.info("replication_slot_created", slot=self.slot, consistent_point=consistent_point)
        return parse_lsn(consistent_point), str(snapshot)

    def start(self) -> None:
        cur = self._cur or self._connect()
        with self._lock:
            cur.start_replication(
                slot_name=self.slot,
                decode=False,
                start_lsn=self.flush_lsn,  # 0: the slot's confirmed position
                options={"proto_version": "1", "publication_names": self.publication},
                status_interval=max(1, int(self._interval)),  # psycopg2's own updates (it refuses < 1 s)
            )
            self._streaming = True
            self._broken = False
            self._last_status = time.monotonic()
        self._ensure_thread()
        log.info("replication_started", slot=self.slot, from_lsn=lsn_text(self.flush_lsn))

    # -- streaming ------------------------------------------------------------------------------------

    @property
    def server_wal_end(self) -> int:
        """The server's sent position as of the last message or keepalive (0 before any)."""
        with self._lock:
            return int(self._cur.wal_end) if self._cur is not None else 0

    def messages(self, until: Callable[[], bool] | None = None) -> Iterator[list[bytes]]:
        """Runs of message payloads, in order, until none arrives for ``idle_seconds`` (or for at most
        ``max_read_seconds``, or as soon as none is at hand and ``until()`` says the caller has all it
        wants). A run is what could be read without waiting (at most ``run_size``): one
        generator step per run, not per message, on the hot path. Reconnects (with backoff) on connection
        loss, or when the status thread found the connection broken; after a reconnect the server resends
        from the confirmed position, which the caller deduplicates (a run cut short by the loss is simply
        resent). While suspended at a ``yield`` it holds no lock: the status thread keeps feedback going."""
        backoff = 0.5
        idle_since = started = time.monotonic()
        while True:
            try:
                fresh = not self._streaming
                run, _, fd = self.read_run()
                backoff = 0.5 if fresh else backoff  # (re)connected
                now = time.monotonic()
                if run:
                    yield run
                    idle_since = now = time.monotonic()
                    if now - started >= self.max_read_seconds:
                        return
                    continue
                if until is not None and until():
                    return
                if now - idle_since >= self.idle_seconds or now - started >= self.max_read_seconds:
                    return
                # Sleeping a little when the socket is drained reads faster than waking per message.
                select.select([fd], [], [], 0.002)
            except psycopg2.DatabaseError as exc:
                backoff = self.connection_lost(exc, backoff, time.sleep)
                if time.monotonic() - idle_since >= max(self.idle_seconds, 5.0):
                    return

    def read_run(self) -> tuple[list[bytes], int, int]:
        """One run: the payloads that can be read without waiting (at most ``run_size`` of them, or until
        ``run_bytes``; maybe none), the server's WAL end after them, and the socket (to wait on). Starts
        streaming first if needed; sends a status update when one is due. Raises psycopg2's errors
        (``connection_lost`` sorts them)."""
        if not self._streaming:
            self.start()
        run: list[bytes] = []
        last = None
        run_size, run_bytes = self.run_size, self.run_bytes
        size = 0
        with self._lock:
            cur = self._cur
            if cur is None or self._broken:
                raise psycopg2.OperationalError("a status update on the replication connection failed")
            read = cur.read_message
            while len(run) < run_size and size < run_bytes:
                msg = read()
                if msg is None:
                    break
                payload = msg.payload
                run.append(payload)
                size += len(payload)
                last = msg
            # Under endless load the socket never drains: keep the status updates on time anyway.
            if time.monotonic() - self._last_status >= self._interval:
                self._send_status_locked()
            fd = cur.fileno()  # type: ignore[no-untyped-call]
            wal_end = int(cur.wal_end)
        if last is not None:
            self.received_lsn = max(self.received_lsn, last.data_start)
        return run, wal_end, fd

    def connection_lost(
        self, exc: psycopg2.DatabaseError, backoff: float, sleep: Callable[[float], object]
    ) -> float:
        """After ``read_run`` raised ``exc``: re-raise it unless the connection is lost; else drop the
        connection, log, wait ``backoff`` (with jitter) by ``sleep``, and return the next backoff. The next
        ``read_run`` reconnects."""
        # A walsender that timed out or died closes the socket without a word: libpq reports a bare
        # DatabaseError, with no SQLSTATE. Other errors (a missing publication...) are raised, and so is
        # 55000 (object not in prerequisite state): a slot the server invalidated (it fell more than
        # max_slot_wal_keep_size behind) answers every reconnect with it, and retrying hid that for good.
        lost = type(exc) is psycopg2.DatabaseError and exc.pgcode is None
        if not (lost or isinstance(exc, psycopg2.OperationalError)) or exc.pgcode == _NOT_IN_STATE:
            raise exc
        self._drop_connection()
        self.reconnects += 1
        delay = min(backoff, self.max_backoff) * (0.5 + random.random() / 2)  # noqa: S311 - jitter
        log.warning("replication_connection_lost", error=str(exc).strip(), retry_in=round(delay, 2))
        sleep(delay)
        return backoff * 2

    def confirm(self, flush_lsn: int) -> None:
        """Everything up to ``flush_lsn`` is durably staged (never called with more). The server hears of
        it with the next status update, at most ``status_interval`` later, even if no ``read`` follows."""
        with self._lock:
            if flush_lsn <= self.flush_lsn:
                return
            self.flush_lsn = flush_lsn
            if not self._streaming or self._broken or time.monotonic() - self._last_status < self._interval:
                return
            try:
                self._send_status_locked()
            except psycopg2.Error as exc:  # the acknowledgement stands: the next ``messages`` reconnects
                self._broken = True
                log.warning("replication_status_update_failed", slot=self.slot, error=str(exc).strip())

    def request_reply(self) -> None:
        """Ask the server for a keepalive now: it carries the walsender's sent position (``server_wal_end``),
        which otherwise only news or an occasional keepalive updates."""
        with self._lock:
            if self._streaming and not self._broken and self._cur is not None:
                try:
                    self._cur.send_feedback(  # type: ignore[no-untyped-call]
                        flush_lsn=self.flush_lsn, write_lsn=self.flush_lsn, reply=True, force=True
                    )
                    self._last_status = time.monotonic()
                except psycopg2.Error as exc:  # the next ``messages`` reconnects
                    self._broken = True
                    log.warning("replication_status_update_failed", slot=self.slot, error=str(exc).strip())

    def send_status(self) -> None:
        with self._lock:
            if self._streaming and not self._broken:
                self._send_status_locked()

    def _send_status_locked(self) -> None:
        assert self._cur is not None
        self._cur.send_feedback(  # type: ignore[no-untyped-call]
            flush_lsn=self.flush_lsn, write_lsn=self.flush_lsn, force=True
        )
        self._last_status = time.monotonic()

    # -- the status thread ----------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        # A weak reference: a stream dropped without ``close`` is still collected (and the thread ends).
        self._thread = threading.Thread(
            target=_keep_status,
            args=(weakref.ref(self), self._stop),
            name=f"pg-status-{self.slot}",
            daemon=True,
        )
        self._thread.start()

    def _status_due(self) -> float:
        """Send a status update if one is due (streaming, none for ``status_interval``); the seconds until the
        next check. Runs on the status thread: a failure is logged and counted, never raised."""
        with self._lock:
            if not self._streaming or self._broken or self._cur is None:
                return min(1.0, self._interval / 4)
            wait = self._last_status + self._interval - time.monotonic()
            if wait > 0:
                return min(wait, 1.0)
            try:
                self._send_status_locked()
                error: Exception | None = None
            except Exception as exc:  # any failure: reconnect on the next read, and say why
                self._broken = True
                error = exc
        if error is None:
            self.thread_updates += 1
            metrics.SOURCE_STATUS_UPDATES.labels(slot=self.slot).inc()
            return min(1.0, self._interval / 4)
        metrics.ERRORS.labels(stage="source", kind=type(error).__name__).inc()
        log.warning(
            "replication_status_update_failed",
            slot=self.slot,
            error=str(error).strip(),
            kind=type(error).__name__,
            detail="the next read reconnects",
            exc_info=not isinstance(error, psycopg2.Error),  # a bug, not a lost connection: show where
        )
        return min(1.0, self._interval / 4)

    def _stop_thread(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        self._thread = None

    def _drop_connection(self) -> None:
        with self._lock:
            self._streaming = False
            self._broken = False
            conn, self._conn, self._cur = self._conn, None, None
            if conn is not None:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()

    def close(self) -> None:
        with contextlib.suppress(psycopg2.Error):
            self.send_status()  # the last confirmed position, whatever the interval
        self._stop_thread()
        self._drop_connection()


def _keep_status(ref: weakref.ref[ReplicationStream], stop: threading.Event) -> None:
    """The status thread: sends due status updates until ``stop`` is set or the stream is gone."""
    wait = 0.1
    while not stop.wait(wait):
        stream = ref()
        if stream is None:
            return
        try:
            wait = max(0.01, stream._status_due())
        except Exception:  # the thread must outlive surprises (``_status_due`` logs its own)
            log.exception("replication_status_thread_error", slot=stream.slot)
            wait = 1.0
        del stream
