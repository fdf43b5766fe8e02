"""The contract every source implements."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from replicator.model import Change, Position, SchemaChange, TableId, TableSchema


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
    - Bad input never stops other tables: it goes to the quarantine with its reason.
    """

    def schemas(self) -> Sequence[TableSchema]:
        """The tables this source replicates, as currently known."""
        ...

    def read(self) -> Iterator[Change | SchemaChange]: ...

    def ack(self, positions: Mapping[TableId, Position]) -> None: ...

    def close(self) -> None: ...
