"""The contract every source implements."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from replicator.model import Change, ChangeChunk, Position, SchemaChange, TableId, TableSchema


class Source(Protocol):
    """Yields changes in source order and learns which of them are durably staged.

    Contract:
    - ``read`` yields changes after the last acknowledged position of each table, in source order (rows of
      one table strictly increasing by ``Position``). It returns when nothing more is available right now;
      the pipeline calls it again later. It may yield changes that were yielded before but never acknowledged
      (after a restart): the pipeline drops those already staged.
    - ``ack`` is called only after every change of each named table up to and including its position is
      durable in staging. The source persists it so a restart resumes right after it. It must be idempotent.
    - A ``SchemaChange`` comes before the first change of a table that uses the new shape.
    - A ``ChangeChunk`` stands for its rows' changes, in order (columnar sources yield chunks for speed;
      rows and chunks of one table may alternate). Positions rise across both alike.
    - Bad input never stops other tables: it goes to the quarantine with its reason.
    """

    def schemas(self) -> Sequence[TableSchema]:
        """The tables this source replicates, as currently known."""
        ...

    def read(self) -> Iterator[Change | SchemaChange | ChangeChunk]: ...

    def ack(self, positions: Mapping[TableId, Position]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Resyncable(Protocol):
    """A source that can start one table over (``replicator resync TABLE``). Optional capability.

    Contract: ``resync(table)`` forgets everything read and acknowledged of ``table`` and persists that at
    once; the next ``read`` yields a fresh full copy of the table (DMS: its LOAD files again; PostgreSQL: a
    new snapshot, as inserts) followed by its changes after that copy, with positions that sort after
    nothing already staged for it. It is called between reads, after the pipeline dropped the table's staged
    but unapplied batches, and before the warehouse empties the target; other tables are not affected.
    """

    def resync(self, table: TableId) -> None: ...


@runtime_checkable
class Stoppable(Protocol):
    """A source that applies its bad-input policy to bad input found after it (optional capability).

    The stage finds values that do not parse as their declared type; the pipeline then calls
    ``stop_table``. Contract: returns False when the table's policy lets the row go (``quarantine``, or the
    operator chose to skip exactly that row): the stage quarantines it and goes on. Returns True when the
    table stops: the source persists the reason (shown with its other stops), yields nothing more of the
    table, and forgets what it yielded of it after the last acknowledged position, so that once the
    operator resumes it yields those changes again. The pipeline then stages nothing of the batch.
    """

    def stop_table(self, table: TableId, *, reason: str, position: Position, detail: str) -> bool: ...


@runtime_checkable
class Streaming(Protocol):
    """A source whose ``read`` itself waits for news (a replication stream, until it has been quiet for
    a while): the loop reads again at once instead of sleeping ``poll_interval_seconds`` between reads."""

    waits_in_read: bool


@runtime_checkable
class Notifying(Protocol):
    """A source that can hear of news between reads (S3 event notifications through SQS): the loop waits
    on it instead of sleeping ``poll_interval_seconds``, and reads again as soon as it returns."""

    def wait_for_news(self, seconds: float, stop: threading.Event) -> None:
        """Return after ``seconds``, or sooner when news may be there or ``stop`` is set."""


@runtime_checkable
class Drainable(Protocol):
    """A source that can tell when it has handed over everything it held when the run started (optional
    capability; ``run --once`` waits for it). A source without it counts as drained when a read finds
    nothing new.

    Contract: ``mark_drain_point()`` notes what the source holds now (``run --once`` calls it first);
    ``drained()`` is True only when every change committed at the source by then is yielded and
    acknowledged. It may be called between reads as often as wanted; a False may ask the server for news,
    so the next read learns more. Until ``drained()`` is True, a read may end as soon as it has handed over
    everything up to the drain point, without the wait for quiet that ends a daemon's reads.
    """

    def mark_drain_point(self) -> None: ...

    def drained(self) -> bool: ...
