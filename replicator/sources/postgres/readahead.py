"""Reading the replication stream ahead of the pipeline, on a thread of its own (issue 16).

Without it the socket is read only while the pipeline asks for changes: while it stages a batch or merges,
the walsender fills the socket buffer and then waits, and the machine's other core idles. ``ReadAhead``
keeps a reader thread on ``ReplicationStream.read_run`` that queues what arrives (at most ``max_bytes`` of
payloads: beyond that it waits for the consumer), so the walsender decodes while the pipeline stages and
merges (pyarrow and DuckDB release the GIL while they work).

The consumer's view is what counts: ``messages`` has the contract of ``ReplicationStream.messages`` (runs in
order, until quiet for ``idle_seconds`` or after ``max_read_seconds``; they are the stream's own settings,
read live), and ``server_wal_end`` is the server's WAL end as of the last run the consumer took, never as of
what only the reader has seen: the source confirms that position when it has nothing pending, so it must not
cover a queued message. A keepalive that moves the WAL end is queued too (as an empty run), in order.

Connection loss: the reader reconnects with backoff (``ReplicationStream.connection_lost``); the server
resends from the confirmed position, after whatever the queue still holds, and the consumer deduplicates as
it does without read-ahead. Any other error is queued and raised by ``messages`` after the runs before it;
the reader then stops, and the next ``messages`` starts a new one. Feedback is unchanged: the reader sends a
status update when one is due, and the stream's status thread still covers the time the reader waits for
the consumer. ``close`` stops the reader before the caller closes the stream.
"""

from __future__ import annotations

import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import psycopg2
import structlog

from replicator.sources.postgres.stream import ReplicationStream

log = structlog.get_logger(__name__)

_Item = tuple[list[bytes], int] | BaseException  # (payloads, WAL end after them) or the reader's error


class ReadAhead:
    """A reader thread in front of ``stream``; see the module docstring."""

    def __init__(
        self, stream: ReplicationStream, *, threaded: bool = True, max_bytes: int = 16 << 20
    ) -> None:
        self.stream = stream
        # False: no thread, ``messages`` and ``server_wal_end`` are the stream's own. For the pure-Python row
        # scanner: its main thread holds the GIL per row, and the reader's fight for it costs more than the
        # overlap gains (measured: 89-113k rows/s without the reader against 76-89k with it).
        self.threaded = threaded
        # Queued payload bytes at most (one read may go over). The consumer holds a run it took while it
        # decodes it, and the reader refills the queue meanwhile: this much twice, beside the buffer's
        # batches (64 MB measured ~80 MB queued at the peak of a load of 1 MB values, at no gain).
        self.max_bytes = max_bytes
        self.batch_runs = 16  # reads handed over as one run at most ...
        self.run_bytes = 4 << 20  # ... and payload bytes (one read may go over)
        self.gather_seconds = 0.01  # what a short run waits for more (latency added at most)
        # The reader's pause when drained while changes flow (latency added at most), at most ``naps`` times
        # in a row; then it waits on the socket. The walsender sends every change with its own send(), and
        # one that finds the reader waiting (or the window just reopened by a read) costs it more than the
        # change's decoding: fewer, fuller reads leave it more CPU, and it is a backlog's bottleneck. 1M
        # changes: walsender 4.1-4.3 s CPU and the run 5.5 s with 1 ms naps; 3.2-3.4 s and 4.3-4.5 s with
        # 10 ms (5 ms: 3.3 s, 4.5-4.6 s; 20 ms: no better). Latency at 200-10k rows/s: p99 0.44-0.70 s.
        self.nap_seconds = 0.01
        self.naps = 5
        self._queue: deque[tuple[_Item, int]] = deque()  # (item, its payload bytes)
        self._bytes = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wal_end = 0  # the server's WAL end as of the last item the consumer took

    @property
    def server_wal_end(self) -> int:
        """The server's sent position as of the last run (or keepalive) ``messages`` handed over."""
        return self._wal_end if self.threaded else self.stream.server_wal_end

    def messages(self, until: Callable[[], bool] | None = None) -> Iterator[list[bytes]]:
        """``ReplicationStream.messages`` (``until`` included), from the queue. A run is what is queued
        when it is taken (up to ``batch_runs`` reads and ``run_bytes``); when that is less than the
        stream's ``run_size``, it waits up to ``gather_seconds`` for more first. So a run shorter than
        ``run_size`` still means caught up (the source then hands on what it collected), and a backlog the
        walsender sends a little slower than it is read still comes in long runs (short ones would cut it
        into many small chunks). A run of large rows cut at ``run_bytes`` is short too: the source then
        hands on rows it would have handed on at its own byte cap (4 MB) anyway."""
        if not self.threaded:
            yield from self.stream.messages(until)
            return
        self._ensure_reader()
        stream = self.stream
        idle_since = started = time.monotonic()
        while True:
            with self._cond:
                if not self._queue:
                    if until is not None and until():
                        return
                    now = time.monotonic()
                    wait = min(
                        stream.idle_seconds - (now - idle_since), stream.max_read_seconds - (now - started)
                    )
                    if wait > 0:
                        self._cond.wait(wait)
                items, size = self._take(self.batch_runs, self.run_bytes)
                count = sum(len(item[0]) for item in items if not isinstance(item, BaseException))
                gather_end = time.monotonic() + self.gather_seconds
                while (
                    items
                    and count < stream.run_size
                    and len(items) < self.batch_runs
                    and size < self.run_bytes
                    and not isinstance(items[-1], BaseException)
                    and (left := gather_end - time.monotonic()) > 0
                ):
                    self._cond.wait(left)
                    more, more_size = self._take(
                        self.batch_runs - len(items), self.run_bytes - size, first=False
                    )
                    if not more and self._queue:  # the next read does not fit: this run is full
                        break
                    items += more
                    size += more_size
                    count += sum(len(item[0]) for item in more if not isinstance(item, BaseException))
            run: list[bytes] = []
            for item in items:
                if isinstance(item, BaseException):
                    if run:
                        yield run
                    raise item
                payloads, self._wal_end = item
                run += payloads
            now = time.monotonic()
            if run:
                yield run
                idle_since = now = time.monotonic()
                if now - started >= stream.max_read_seconds:
                    return
                continue
            if now - idle_since >= stream.idle_seconds or now - started >= stream.max_read_seconds:
                return

    def _take(self, n: int, budget: int, *, first: bool = True) -> tuple[list[_Item], int]:
        """Up to ``n`` queued items holding at most ``budget`` payload bytes (with ``first``, the first is
        taken whatever its size, so a run always makes progress), with their bytes (``_cond`` held). An
        item that would go past the budget stays queued: one read is up to a stream run's bytes, so taking
        it anyway doubled a run (7.3 MB seen against 4 MB)."""
        taken: list[_Item] = []
        size = 0
        queue = self._queue
        while queue and len(taken) < n:
            if (taken or not first) and size + queue[0][1] > budget:
                break
            item, bytes_ = queue.popleft()
            taken.append(item)
            size += bytes_
        if taken:
            self._bytes -= size
            self._cond.notify_all()
        return taken, size

    def close(self) -> None:
        """Stop the reader (before the stream is closed). What is queued is dropped: it was never
        acknowledged, so the server sends it again."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10.0)
        self._thread = None
        with self._cond:
            self._queue.clear()
            self._bytes = 0

    # -- the reader thread ----------------------------------------------------------------------------

    def _ensure_reader(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read, args=(self._stop,), name=f"pg-read-{self.stream.slot}", daemon=True
        )
        self._thread.start()

    def _put(self, item: _Item, size: int, stop: threading.Event) -> bool:
        with self._cond:
            while self._bytes >= self.max_bytes and not stop.is_set():
                self._cond.wait(0.5)  # the consumer is busy (staging, merging): the stream waits
            if stop.is_set():
                return False
            self._queue.append((item, size))
            self._bytes += size
            self._cond.notify_all()
        return True

    def _read(self, stop: threading.Event) -> None:
        stream = self.stream
        backoff = 0.5
        wal_end = -1
        quiet = 0  # reads in a row that found nothing
        try:
            while not stop.is_set():
                try:
                    fresh = not stream._streaming
                    run, end, fd = stream.read_run()
                except psycopg2.DatabaseError as exc:
                    backoff = stream.connection_lost(exc, backoff, stop.wait)
                    continue
                if fresh:
                    backoff = 0.5
                if run or end != wal_end:
                    wal_end = end
                    if not self._put((run, end), sum(map(len, run)), stop):
                        return
                if run:
                    quiet = 0
                elif quiet < self.naps:
                    # Drained while changes flow: nap instead of waiting on the socket, so the walsender can
                    # send without waking us for every message (that wakeup costs it more than the message).
                    quiet += 1
                    stop.wait(self.nap_seconds)
                else:
                    select.select([fd], [], [], 0.05)  # quiet: wait for news (data or a keepalive)
        except BaseException as exc:  # handed to the consumer, which raises it
            log.debug("replication_reader_stopped", slot=stream.slot, error=str(exc).strip())
            self._put(exc, 0, stop)
